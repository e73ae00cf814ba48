package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithBuilds(m))
}

// TestChaosQuick runs `hotdesk-chaos -quick` against freshly built binaries:
// a real group (3 etcd member processes, 3 hotdeskd, compositor processes,
// PAM account checks of the card policy), the faults of quickFaults one at
// a time, the history checked. It fails on
// any violation the harness reports, or a missing row.
//
// Budget: about 40 s of run on 2 cores (setup ~6 s, a 4 s baseline, each
// fault ~10 s), plus building hotdeskd (~10-40 s); bounded at 4 minutes.
func TestChaosQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server group of 6 processes")
	}
	// hotdeskd as every package's end-to-end tests link it (BuildHotdesk:
	// one link per run, shared through the link cache), not a link of its
	// own; the harness binary on its own.
	hotdeskd := testutil.BuildHotdesk(t)
	bin := testutil.Build(t, ".")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin+"/hotdesk-chaos", "-bin", hotdeskd, "-quick", "-seed", "1")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("rows:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("hotdesk-chaos -quick: %v\n%s", err, lastLines(stderr.String(), 60))
	}
	var rows []Row
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r Row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("row %q: %v", sc.Text(), err)
		}
		rows = append(rows, r)
	}
	if len(rows) != 1+len(quickFaults) {
		t.Fatalf("%d rows; want the baseline and %d faults", len(rows), len(quickFaults))
	}
	for i, r := range rows[1:] {
		if r.Fault != quickFaults[i] || r.RecoveryMs < 0 || r.Ops == 0 {
			t.Errorf("row %+v; want fault %s recovered, with operations", r, quickFaults[i])
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestCommandLine: as every binary of the tree (README, Install),
// --version prints the stamp, --help exits 0 and a stray word is a usage
// error with exit status 2 that starts nothing (it started a whole group
// under faults).
func TestCommandLine(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildStamped(t, testutil.Stamp, "github.com/hotdesk/hotdesk/cmd/hotdesk-chaos") + "/hotdesk-chaos"
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version"}, 0, "hotdesk-chaos " + testutil.Stamp + "\n"},
		{[]string{"--help"}, 0, "-faults"},
		{[]string{"-quick", "stray"}, 2, `unexpected argument "stray"`},
		{[]string{"-no-such-flag"}, 2, "flag provided but not defined"},
	} {
		out, code := testutil.Exec(t, bin, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("hotdesk-chaos %q: exit %d, %.300q; want exit %d and %q", c.args, code, out, c.code, c.want)
		}
	}
}
