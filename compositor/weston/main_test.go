package weston

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/testutil"
)

// helperEnv selects a fake compositor mode when the test binary is run as
// the compositor binary. Fakes only show what real weston cannot: ignoring
// SIGTERM, failing to start, flooding its log.
const helperEnv = "HOTDESK_WESTON_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	code := m.Run()
	if code == 0 {
		if err := checkGoroutines(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// runHelper is a fake compositor. Modes:
//
//	exit1        print "boom" to stderr and exit 1
//	hang         print "started" and never create the socket
//	listen       listen on $XDG_RUNTIME_DIR/wayland-hd
//	ignore-term  like listen, but ignore SIGTERM
//	chatty       write 4 KiB to stdout, then like listen
//	with-child   start a child (mode hang) in its group, then like listen
func runHelper(mode string) int {
	switch mode {
	case "exit1":
		fmt.Fprintln(os.Stderr, "boom")
		return 1
	case "hang":
		fmt.Fprintln(os.Stderr, "started")
		for {
			time.Sleep(time.Hour)
		}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	case "chatty":
		line := strings.Repeat("x", 63) + "\n"
		for range 64 {
			os.Stdout.WriteString(line)
		}
	case "with-child":
		// A session application that outlives the compositor unless its
		// process group is killed.
		c := exec.Command(os.Args[0])
		c.Env = append(os.Environ(), helperEnv+"=hang")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "listen":
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		return 2
	}
	l, err := net.Listen("unix", filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), socketName))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go testutil.DiscardConns(l)
	for {
		time.Sleep(time.Hour)
	}
}

// checkGoroutines fails if goroutines of this package outlive the tests.
func checkGoroutines(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "compositor/weston.(*") && !strings.Contains(g, "checkGoroutines") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
