package etcdtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// AccessEnv names the environment variable that carries
// "clientURL,peerURL,tlsDir" to the helper process of access attempts, for
// tests proving that a registry is closed to other local users.
const AccessEnv = "HOTDESK_TEST_ETCD_ACCESS"

// AccessAttempts is how many attempts TryAccess makes.
const AccessAttempts = 6

// TryAccess tries to read and write the registry at clientURL (and its peer
// port, and the certificates in tlsDir) without being given any credential,
// the way another local user would: reading the client key, a gRPC Get and
// Put without a client certificate, the HTTP gateway over TLS and in clear,
// and the peer port. It returns one line per attempt, "BREACH …" for each
// that got through.
func TryAccess(clientURL, peerURL, tlsDir string) []string {
	var out []string
	note := func(what string, err error) {
		if err == nil {
			out = append(out, "BREACH "+what)
		} else {
			out = append(out, fmt.Sprintf("refused %s: %v", what, err))
		}
	}
	_, err := os.ReadFile(filepath.Join(tlsDir, "client.key"))
	note("read client.key", err)

	insecure := &tls.Config{InsecureSkipVerify: true}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, TLS: insecure, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		// The Get and the Put at once, each within its own 2 s: a refused
		// one takes them all (the client retries until its deadline).
		var getErr, putErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, getErr = cli.Get(ctx, "/hotdesk/", clientv3.WithPrefix())
		})
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, putErr = cli.Put(ctx, "/hotdesk/tokens/soft.attacker", "x")
		})
		wg.Wait()
		note("grpc get", getErr)
		note("grpc put", putErr)
		cli.Close()
	} else {
		note("grpc get", err)
		note("grpc put", err)
	}

	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: insecure}}
	post := func(url string) error {
		// {"key": "/hotdesk/", "range_end": "/hotdesk0"}
		body := []byte(`{"key":"L2hvdGRlc2sv","range_end":"L2hvdGRlc2sw"}`)
		resp, err := hc.Post(url+"/v3/kv/range", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("header")) {
			return fmt.Errorf("status %d: %.100s", resp.StatusCode, b)
		}
		return nil
	}
	note("gateway https range", post(clientURL))
	note("gateway http range", post(strings.Replace(clientURL, "https://", "http://", 1)))
	resp, err := hc.Get(peerURL + "/members")
	if err == nil {
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		resp.Body.Close()
	}
	note("peer members", err)
	return out
}

// AccessAsUser runs the test binary's helper test (a test that calls
// AccessHelperMain first) as the unprivileged user (e.g. "nobody") with
// setpriv, and returns its output. The test binary is copied where that
// user can run it.
func AccessAsUser(ctx context.Context, user, group, helperTest, clientURL, peerURL, tlsDir string) (string, error) {
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "hd-access-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "helper.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	_, out, err := testutil.OutputRetryingBusy(func() *exec.Cmd {
		cmd := exec.CommandContext(ctx, "setpriv", "--reuid="+user, "--regid="+group, "--clear-groups",
			bin, "-test.run=^"+helperTest+"$", "-test.v")
		cmd.Env = append(os.Environ(), AccessEnv+"="+clientURL+","+peerURL+","+tlsDir)
		return cmd
	})
	return string(out), err
}

// AccessHelperMain is the body of the helper test: when AccessEnv is set it
// prints TryAccess's lines and "ATTEMPTS n" and returns true.
func AccessHelperMain() bool {
	v := os.Getenv(AccessEnv)
	if v == "" {
		return false
	}
	parts := strings.SplitN(v, ",", 3)
	if len(parts) != 3 {
		fmt.Println("bad", AccessEnv)
		return true
	}
	lines := TryAccess(parts[0], parts[1], parts[2])
	for _, l := range lines {
		fmt.Println(l)
	}
	fmt.Printf("ATTEMPTS %d\n", len(lines))
	return true
}
