package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hotdesk/hotdesk/cmd/internal/adminapi"
	"github.com/hotdesk/hotdesk/internal/freeport"
	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/registry"
)

// proc is one child process of the harness.
type proc struct {
	name   string
	args   []string
	log    string
	cred   *syscall.Credential // run as this user; nil: as the harness
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *proc) start() error {
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s start %s\n", p.name, time.Now().UTC().Format(time.RFC3339Nano))
	p.cmd = exec.Command(p.args[0], p.args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("chaos: start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.exited = exited
	go func(c *exec.Cmd) { _ = c.Wait(); close(exited) }(p.cmd)
	return nil
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) signal(s syscall.Signal) {
	if p.running() {
		_ = p.cmd.Process.Signal(s)
	}
}

// stop sends sig and waits for the exit (SIGKILL after grace).
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot exit
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// member is one etcd member process.
type member struct {
	proc
	client string
}

// startCluster starts 3 member processes forming one cluster.
func startCluster(ctx context.Context, self, dir string, n int) ([]*member, error) {
	urls := make([]string, 2*n)
	for i := range urls {
		port, err := freeport.Loopback()
		if err != nil {
			return nil, err
		}
		urls[i] = fmt.Sprintf("http://127.0.0.1:%d", port)
	}
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("m%d=%s", i, urls[2*i+1]))
	}
	ms := make([]*member, n)
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		ms[i] = &member{client: urls[2*i], proc: proc{name: "etcd-" + name, log: filepath.Join(dir, "etcd-"+name+".log"),
			args: []string{self, "etcd-member", "-name", name, "-dir", filepath.Join(dir, "etcd", name),
				"-client", urls[2*i], "-peer", urls[2*i+1], "-cluster", strings.Join(peers, ",")}}}
		if err := ms[i].start(); err != nil {
			return nil, err
		}
	}
	cli, err := etcdClient(ms)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	deadline := time.Now().Add(90 * time.Second)
	for _, m := range ms {
		for {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := cli.Status(sctx, m.client)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return ms, fmt.Errorf("chaos: etcd member %s not ready: %w", m.name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return ms, nil
}

func etcdClient(ms []*member) (*clientv3.Client, error) {
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.client)
	}
	// Dialled as a broker's client is (registry.DialOptions): with gRPC's
	// default backoff the harness saw etcd back up to 10 s after a long
	// etcd_outage, and counted that wait as the group's recovery.
	return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second,
		DialOptions: registry.DialOptions(2 * time.Second), Logger: zap.NewNop()})
}

// leader returns the index of the member that is the raft leader.
func leader(ctx context.Context, cli *clientv3.Client, ms []*member) (int, error) {
	for i, m := range ms {
		if !m.running() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, m.client)
		cancel()
		if err == nil && st.Header.MemberId == st.Leader {
			return i, nil
		}
	}
	return -1, errors.New("chaos: no etcd leader found")
}

// hotdeskd is one broker process with its proxies to the etcd members.
type hotdeskd struct {
	proc
	id      string
	addr    string
	socket  string
	cfgFile string
	pin     []byte
	proxies []*proxy
	admin   *adminapi.Client
	// prev and next are the previous release's hotdeskd and this one's,
	// which broker_downgrade and broker_upgrade restart it with ("": no
	// -from).
	prev, next string
}

func (b *hotdeskd) brokerAddr() brokerAddr { return brokerAddr{id: b.id, addr: b.addr, pin: b.pin} }

type groupConfig struct {
	bin, self, dir, lifeline string
	from                     string              // the previous release's bin directory ("": none, see options.from)
	cred                     *syscall.Credential // the brokers' user (nil: the harness's)
	leaseTTL                 time.Duration
	logLevel                 string
	auth                     string // kiosk or card (see authConfig)
}

// newBroker writes a broker's config, proxies and certificate.
func newBroker(ctx context.Context, gc groupConfig, i int, ms []*member) (*hotdeskd, error) {
	id := fmt.Sprintf("b%d", i+1)
	port, err := freeport.Loopback()
	if err != nil {
		return nil, err
	}
	b := &hotdeskd{id: id, addr: fmt.Sprintf("127.0.0.1:%d", port), socket: filepath.Join(gc.dir, id+".sock")}
	var eps []string
	for _, m := range ms {
		p, err := newProxy(strings.TrimPrefix(m.client, "http://"))
		if err != nil {
			return nil, err
		}
		b.proxies = append(b.proxies, p)
		eps = append(eps, fmt.Sprintf("%q", "http://"+p.addr()))
	}
	session, authBlock, err := authConfig(gc)
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`server_id    = %q
data_dir     = %q
listen       = %q
advertise    = %q
admin_socket = %q
log_level    = %q
etcd {
  endpoints    = [%s]
  lease_ttl    = %q
  dial_timeout = "2s"
}
session {
  %s
  keep_on_stop    = true
%s}
auth {
%s}
compositor {
  type          = "wayray"
  binary        = %q
  args          = ["compositor", "-lifeline", %q]
  start_timeout = "10s"
  stop_grace    = "2s"
}
`, id, filepath.Join(gc.dir, id), b.addr, b.addr, b.socket, gc.logLevel, strings.Join(eps, ", "),
		gc.leaseTTL.String(), suspendTimeout, session, authBlock, gc.self, gc.lifeline)
	cfgFile := filepath.Join(gc.dir, id+".hcl")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if gc.cred != nil {
		if err := os.Chown(cfgFile, int(gc.cred.Uid), int(gc.cred.Gid)); err != nil {
			return nil, err
		}
	}
	hd := filepath.Join(gc.bin, "hotdeskd")
	if gc.from != "" {
		b.prev, b.next = filepath.Join(gc.from, "hotdeskd"), hd
		hd = b.prev
	}
	fpCmd := exec.CommandContext(ctx, hd, "-config", cfgFile, "-fingerprint")
	fpCmd.SysProcAttr = &syscall.SysProcAttr{Credential: gc.cred}
	out, err := fpCmd.Output()
	if err != nil {
		return nil, fmt.Errorf("chaos: %s -fingerprint: %w", hd, err)
	}
	if b.pin, err = proto.ParseFingerprint(strings.TrimSpace(string(out))); err != nil {
		return nil, fmt.Errorf("chaos: fingerprint of %s: %w", id, err)
	}
	b.proc = proc{name: id, log: filepath.Join(gc.dir, id+".log"), args: []string{hd, "-config", cfgFile}, cred: gc.cred}
	b.admin = adminapi.NewClient(b.socket)
	b.cfgFile = cfgFile
	return b, nil
}

// authConfig returns the lines of the brokers' session and auth blocks
// for the login policy: kiosk (no PAM), or card, where every login and
// every hot-desk consults the account stack of a PAM service in the
// brokers' PAM helpers (pam_nologin, then pam_permit: the tokens' users
// need not exist), with its 60 s cache per terminal, and a new desktop's
// login opens a PAM session (pam_permit) that a helper holds for the
// desktop's life, as a site's card policies do.
func authConfig(gc groupConfig) (session, auth string, err error) {
	if gc.auth != "card" {
		return "  auth            = \"kiosk\"\n  kiosk_user      = \"chaos\"\n", "  open_session = false\n", nil
	}
	dir := filepath.Join(gc.dir, "pam.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	stack := "auth required pam_deny.so\naccount requisite pam_nologin.so\naccount required pam_permit.so\nsession required pam_permit.so\n"
	if err := os.WriteFile(filepath.Join(dir, "hotdesk"), []byte(stack), 0o644); err != nil {
		return "", "", err
	}
	return "  auth            = \"card\"\n", fmt.Sprintf("  open_session = true\n  pam_dir      = %q\n", dir), nil
}

// ready reports whether the broker answers /readyz with ready.
func (b *hotdeskd) ready(ctx context.Context) bool {
	if !b.running() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return b.admin.Ready(ctx) == nil
}

// waitReady waits until the broker is ready, at most d.
func (b *hotdeskd) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !b.ready(ctx) {
		if !b.running() {
			return fmt.Errorf("chaos: %s exited; log tail:\n%s", b.id, tail(b.log, 3000))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: %s not ready after %v; log tail:\n%s", b.id, d, tail(b.log, 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func (b *hotdeskd) setCut(cut bool) {
	for _, p := range b.proxies {
		p.setCut(cut)
	}
}

func tail(file string, n int) string {
	f, err := os.Open(file)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	size := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		size += len(sc.Text()) + 1
		for size > n && len(lines) > 1 {
			size -= len(lines[0]) + 1
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
