package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/registry"
)

// Environment of the etcd child process (the bench re-executes itself).
const (
	childDirEnv     = "HOTDESK_BENCH_ETCD_CHILD" // data directory; set = child mode
	childNoFsyncEnv = "HOTDESK_BENCH_ETCD_NOFSYNC"
	childMembers    = 3
	clusterTimeout  = 90 * time.Second
)

// cluster is a running etcd cluster, in this process or in a child.
type cluster interface {
	Endpoints() []string
	Close() error
}

// startMembers starts n embedded members forming one cluster on free
// loopback ports under dir. It retries a failed start (a port taken between
// picking and binding) at most 3 times.
func startMembers(ctx context.Context, dir string, n int, noFsync bool, log hclog.Logger) ([]*registry.Embedded, error) {
	var err error
	for attempt := range 3 {
		var ms []*registry.Embedded
		ms, err = startMembersOnce(ctx, filepath.Join(dir, fmt.Sprintf("try%d", attempt)), n, noFsync, log)
		if err == nil {
			return ms, nil
		}
		if ctx.Err() != nil {
			break
		}
		log.Warn("etcd cluster start failed, retrying", "attempt", attempt+1, "error", err)
	}
	return nil, fmt.Errorf("bench: etcd cluster: %w", err)
}

func startMembersOnce(ctx context.Context, dir string, n int, noFsync bool, log hclog.Logger) ([]*registry.Embedded, error) {
	cfgs := make([]registry.EmbedConfig, n)
	for i := range cfgs {
		name := fmt.Sprintf("m%d", i)
		cfgs[i] = registry.EmbedConfig{Dir: filepath.Join(dir, name), Name: name, UnsafeNoFsync: noFsync, Logger: log.Named(name)}
	}
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	members, _, err := registry.StartCluster(ctx, cfgs)
	return members, err
}

// inprocCluster runs the members in this process.
type inprocCluster struct{ members []*registry.Embedded }

func (c *inprocCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.Endpoints()...)
	}
	return eps
}

func (c *inprocCluster) Close() error {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Add(1)
		go func() { defer wg.Done(); m.Close() }()
	}
	wg.Wait()
	return nil
}

// childCluster runs the members in a child process (this binary again, with
// childDirEnv set), so that the bench's heap is the brokers' alone. The
// child stops when its stdin is closed (or this process dies).
type childCluster struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	eps   []string
	done  chan error
}

type childHello struct {
	Endpoints []string `json:"endpoints"`
	Error     string   `json:"error,omitempty"`
}

func startChildCluster(ctx context.Context, dir string, noFsync bool) (*childCluster, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: etcd child: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir)
	if noFsync {
		cmd.Env = append(cmd.Env, childNoFsyncEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	setPdeathsig(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: etcd child: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: etcd child: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: etcd child: %w", err)
	}
	c := &childCluster{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	lines := make(chan childHello, 1)
	go func() {
		var h childHello
		line, err := bufio.NewReaderSize(io.LimitReader(stdout, 64<<10), 4096).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &h)
		}
		if err != nil && h.Error == "" {
			h.Error = fmt.Sprintf("reading endpoints: %v", err)
		}
		lines <- h
		_, _ = io.Copy(io.Discard, stdout)
		c.done <- cmd.Wait()
	}()
	tctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	select {
	case h := <-lines:
		if h.Error != "" || len(h.Endpoints) == 0 {
			c.Close()
			return nil, fmt.Errorf("bench: etcd child: %s", h.Error)
		}
		c.eps = h.Endpoints
		return c, nil
	case <-tctx.Done():
		c.Close()
		return nil, fmt.Errorf("bench: etcd child: %w", tctx.Err())
	}
}

func (c *childCluster) Endpoints() []string { return c.eps }

// Close asks the child to stop and waits at most 30 s before killing it.
func (c *childCluster) Close() error {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return nil
}

// etcdChildMain is the child process: start the members, print their
// endpoints as one JSON line on stdout, serve until stdin is closed.
func etcdChildMain(dir string) int {
	log := hclog.New(&hclog.LoggerOptions{Name: "bench-etcd", Level: hclog.Error, Output: os.Stderr})
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	members, err := startMembers(ctx, dir, childMembers, os.Getenv(childNoFsyncEnv) == "1", log)
	cancel()
	enc := json.NewEncoder(os.Stdout)
	if err != nil {
		_ = enc.Encode(childHello{Error: err.Error()})
		return 1
	}
	c := &inprocCluster{members: members}
	if err := enc.Encode(childHello{Endpoints: c.Endpoints()}); err != nil {
		c.Close()
		return 1
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it or dies
	c.Close()
	return 0
}
