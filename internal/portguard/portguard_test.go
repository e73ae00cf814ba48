package portguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// Budget: the whole package runs in about a second (a few dozen nft
// calls and bash children).

const waitLimit = 20 * time.Second

// requireNFT fails the test when CI=true and the guard cannot work here
// (no nft, not root), and skips it otherwise.
func requireNFT(t *testing.T) {
	t.Helper()
	if _, err := LookNFT(""); err != nil {
		testutil.SkipOrFail(t, "nft: %v", err)
	}
	testutil.NeedRoot(t, "portguard tests need root (nftables and a child as nobody)")
}

// testTable is a table name of this test alone, deleted at cleanup.
func testTable(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "hdtest_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := Delete(ctx, "", name); err != nil {
			t.Errorf("Delete(%s): %v", name, err)
		}
	})
	return name
}

func newGuard(t *testing.T, cfg Config) *Guard {
	t.Helper()
	if cfg.Table == "" {
		cfg.Table = testTable(t)
	}
	cfg.Logger = testutil.Logger(t, "portguard", hclog.Debug)
	g, err := New(ctx(t), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return c
}

// listen opens a listener on 127.0.0.1 that accepts and closes
// connections until the test ends; it returns its port.
func listen(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go testutil.DiscardConns(ln)
	return ln.Addr().(*net.TCPAddr).Port
}

// reachable reports whether uid/gid can connect to port: true when it
// connects, false when refused; anything else fails the test.
func reachable(t *testing.T, uid, gid, port int) bool {
	t.Helper()
	err := testutil.DialAs(uid, gid, port)
	if err != nil && !errors.Is(err, testutil.ErrConnRefused) {
		t.Fatalf("DialAs: %v", err)
	}
	return err == nil
}

// rootDial fails the test unless this process (the guard's uid) connects.
func rootDial(t *testing.T, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatalf("dial as the guard's uid: %v", err)
	}
	c.Close()
}

// TestGuard: another uid reaches a loopback listener until its port is
// added, is refused while it is guarded (the guard's uid is not), and
// reaches it again once removed. Add and Remove are idempotent.
func TestGuard(t *testing.T) {
	requireNFT(t)
	t.Parallel()
	g := newGuard(t, Config{})
	uid, gid := testutil.Nobody(t)
	port := listen(t)
	if !reachable(t, uid, gid, port) {
		t.Fatal("nobody refused before the port is guarded")
	}
	for range 2 {
		if err := g.Add(ctx(t), port); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	if reachable(t, uid, gid, port) {
		t.Fatal("nobody connected to a guarded port")
	}
	rootDial(t, port)
	if got, err := g.Ports(ctx(t)); err != nil || !slices.Equal(got, []int{port}) {
		t.Fatalf("Ports = %v, %v; want [%d]", got, err, port)
	}
	for range 2 {
		if err := g.Remove(ctx(t), port); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if !reachable(t, uid, gid, port) {
		t.Fatal("nobody refused after the port was removed")
	}
	if got, err := g.Ports(ctx(t)); err != nil || len(got) != 0 {
		t.Fatalf("Ports = %v, %v; want none", got, err)
	}
}

// TestGuardUID: the uid allowed is Config.UID, not the process's.
func TestGuardUID(t *testing.T) {
	requireNFT(t)
	t.Parallel()
	uid, gid := testutil.Nobody(t)
	g := newGuard(t, Config{UID: &uid})
	port := listen(t)
	if err := g.Add(ctx(t), port); err != nil {
		t.Fatal(err)
	}
	if !reachable(t, uid, gid, port) {
		t.Fatal("the allowed uid was refused")
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("root connected to a port guarded for nobody")
	}
}

// guardedListener is a new Guard (cfg) and a listening loopback port added
// to it, with nobody's uid and gid to try it as.
func guardedListener(t *testing.T, cfg Config) (g *Guard, port, uid, gid int) {
	t.Helper()
	uid, gid = testutil.Nobody(t)
	g = newGuard(t, cfg)
	port = listen(t)
	if err := g.Add(ctx(t), port); err != nil {
		t.Fatal(err)
	}
	return g, port, uid, gid
}

// TestNewKeepsPorts: a new Guard on the table of a previous one (a
// restarted daemon) keeps its ports guarded.
func TestNewKeepsPorts(t *testing.T) {
	requireNFT(t)
	t.Parallel()
	g1, port, uid, gid := guardedListener(t, Config{})
	g2 := newGuard(t, Config{Table: g1.Table()})
	if reachable(t, uid, gid, port) {
		t.Fatal("nobody connected after the guard was set up again")
	}
	if got, err := g2.Ports(ctx(t)); err != nil || !slices.Equal(got, []int{port}) {
		t.Fatalf("Ports = %v, %v; want [%d]", got, err, port)
	}
}

// TestEnsure: a table deleted behind the guard's back (a firewall reload)
// is restored with the ports Add put in it; an intact one is left alone.
func TestEnsure(t *testing.T) {
	requireNFT(t)
	t.Parallel()
	g, port, uid, gid := guardedListener(t, Config{})
	if restored, err := g.Ensure(ctx(t)); err != nil || restored {
		t.Fatalf("Ensure on an intact table = %v, %v; want false, nil", restored, err)
	}
	if err := Delete(ctx(t), "", g.Table()); err != nil {
		t.Fatal(err)
	}
	if !reachable(t, uid, gid, port) {
		t.Fatal("nobody refused with the table deleted: the test cannot show a restore")
	}
	if restored, err := g.Ensure(ctx(t)); err != nil || !restored {
		t.Fatalf("Ensure on a deleted table = %v, %v; want true, nil", restored, err)
	}
	if reachable(t, uid, gid, port) {
		t.Fatal("nobody connected after Ensure restored the table")
	}
	// A foreign rule in the chain is replaced too.
	if err := g.run(ctx(t), "add rule inet "+g.Table()+" output accept\n"); err != nil {
		t.Fatal(err)
	}
	if restored, err := g.Ensure(ctx(t)); err != nil || !restored {
		t.Fatalf("Ensure with a foreign rule = %v, %v; want true, nil", restored, err)
	}
	if restored, err := g.Ensure(ctx(t)); err != nil || restored {
		t.Fatalf("Ensure after the restore = %v, %v; want false, nil", restored, err)
	}
}

// TestErrors: bad ports and table names are ErrInvalid; a missing or
// failing nft is ErrUnavailable, with the fix in the message.
func TestErrors(t *testing.T) {
	t.Parallel()
	if _, err := New(context.Background(), Config{Table: "bad name"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New(bad table) err = %v; want ErrInvalid", err)
	}
	_, err := New(context.Background(), Config{NFT: "/nonexistent/nft"})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("New(missing nft) err = %v; want ErrUnavailable", err)
	} else if want := "install the nftables package"; !strings.Contains(err.Error(), want) {
		t.Errorf("New(missing nft) err = %v; want it to say %q", err, want)
	}
	if _, err := New(context.Background(), Config{NFT: "/bin/false", Table: "hdtest_false"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("New(failing nft) err = %v; want ErrUnavailable", err)
	}
	if err := Delete(context.Background(), "", "bad name"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Delete(bad table) err = %v; want ErrInvalid", err)
	}
	requireNFT(t)
	g := newGuard(t, Config{})
	for _, p := range []int{0, -1, 65536} {
		if err := g.Add(ctx(t), p); !errors.Is(err, ErrInvalid) {
			t.Errorf("Add(%d) err = %v; want ErrInvalid", p, err)
		}
		if err := g.Remove(ctx(t), p); !errors.Is(err, ErrInvalid) {
			t.Errorf("Remove(%d) err = %v; want ErrInvalid", p, err)
		}
	}
}

// TestAddCounts: a port added twice (freed by one listener, picked by the
// next before the first was removed) stays guarded until its second
// Remove.
func TestAddCounts(t *testing.T) {
	requireNFT(t)
	t.Parallel()
	g, port, uid, gid := guardedListener(t, Config{})
	if err := g.Add(ctx(t), port); err != nil { // the second Add
		t.Fatal(err)
	}
	if err := g.Remove(ctx(t), port); err != nil {
		t.Fatal(err)
	}
	if reachable(t, uid, gid, port) {
		t.Fatal("nobody connected after one Remove of a port added twice")
	}
	if err := g.Remove(ctx(t), port); err != nil {
		t.Fatal(err)
	}
	if !reachable(t, uid, gid, port) {
		t.Fatal("nobody refused after the second Remove")
	}
}

// TestRetire: the table goes only when nothing is left in its set.
func TestRetire(t *testing.T) {
	requireNFT(t)
	t.Parallel()
	g := newGuard(t, Config{})
	if err := g.Add(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	if deleted, err := g.Retire(ctx(t)); err != nil || deleted {
		t.Fatalf("Retire with a port = %v, %v; want false, nil", deleted, err)
	}
	if _, err := g.Ports(ctx(t)); err != nil {
		t.Fatalf("table gone after a refused Retire: %v", err)
	}
	if err := g.Remove(ctx(t), 1); err != nil {
		t.Fatal(err)
	}
	if deleted, err := g.Retire(ctx(t)); err != nil || !deleted {
		t.Fatalf("Retire with no port = %v, %v; want true, nil", deleted, err)
	}
	if _, err := g.Ports(ctx(t)); err == nil {
		t.Fatal("table still there after Retire")
	}
}

func TestTableName(t *testing.T) {
	t.Parallel()
	a, b := TableName("/var/lib/hotdesk/sessions"), TableName("/tmp/x")
	if a == b || !tableRe.MatchString(a) || !strings.HasPrefix(a, "hotdesk_") || a != TableName("/var/lib/hotdesk/sessions") {
		t.Fatalf("TableName = %q, %q; want distinct, stable, valid hotdesk_ names", a, b)
	}
}
