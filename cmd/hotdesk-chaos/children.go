package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotdesk/hotdesk/compositor/wayray"
	"github.com/hotdesk/hotdesk/registry"
)

// The chaos binary re-executes itself for its real processes:
//
//	hotdesk-chaos etcd-member -name m0 -dir D -client URL -peer URL -cluster m0=URL,…
//	hotdesk-chaos compositor -lifeline FILE
//
// An etcd member is go.etcd.io/etcd/server/v3/embed (registry.StartEmbedded)
// in its own process: kill -9 is a real crash. The compositor speaks
// hotdesk's control protocol (proto/COMPOSITOR.md) honestly and runs no
// applications: a desktop that costs nothing, in a real process that a
// broker starts, suspends, resumes, re-adopts after a restart and destroys.

// etcdMemberMain runs one etcd member until SIGTERM (clean stop) or SIGKILL.
func etcdMemberMain(args []string) int {
	fs := flag.NewFlagSet("etcd-member", flag.ContinueOnError)
	name := fs.String("name", "", "member name")
	dir := fs.String("dir", "", "data directory")
	client := fs.String("client", "", "client URL")
	peer := fs.String("peer", "", "peer URL")
	cluster := fs.String("cluster", "", "initial cluster name=peerURL,…")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "etcd-" + *name, Level: hclog.Warn, Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// A member that restarts while the others are down cannot become ready
	// (no quorum) until they return: wait for that as long as it takes.
	var m *registry.Embedded
	for {
		var err error
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		m, err = registry.StartEmbedded(sctx, registry.EmbedConfig{Dir: *dir, Name: *name, ClientURL: *client, PeerURL: *peer,
			InitialCluster: *cluster, UnsafeNoFsync: true, Logger: log})
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return 0
		}
		log.Error("member start failed, retrying", "error", err)
		time.Sleep(time.Second)
	}
	fmt.Println("ready")
	select {
	case <-ctx.Done():
	case err := <-m.Err():
		log.Error("member failed", "error", err)
	}
	m.Close()
	return 0
}

// compositorMain is a conforming control-protocol compositor. It exits when
// its lifeline file disappears (the chaos run ended), after Destroy, or when
// its socket breaks.
func compositorMain(args []string) int {
	fs := flag.NewFlagSet("compositor", flag.ContinueOnError)
	lifeline := fs.String("lifeline", "", "exit when this file is gone")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ln, err := net.Listen("unix", os.Getenv("HOTDESK_CONTROL_SOCKET"))
	if err != nil {
		return 1
	}
	go func() {
		for range time.Tick(time.Second) {
			if _, err := os.Stat(*lifeline); errors.Is(err, os.ErrNotExist) {
				os.Exit(0)
			}
		}
	}()
	start := time.Now()
	rendering, clients := true, 0
	const endpoint = "rdp://127.0.0.1:9" // never dialled: the harness redeems no ticket
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		_ = wayray.WriteMsg(c, wayray.MsgHello, 0, wayray.Hello{Version: wayray.ProtocolVersion, Name: "hotdesk-chaos 1",
			PID: os.Getpid(), Endpoint: endpoint})
		for {
			f, err := wayray.ReadMsg(c, 0)
			if err != nil {
				break // the broker went away: wait for the next one
			}
			r := wayray.Reply{OK: true}
			switch f.Type {
			case wayray.MsgSuspend:
				rendering, clients = false, 0
			case wayray.MsgResume:
				rendering = true
			case wayray.MsgStatus:
				r.Rendering, r.Clients, r.UptimeMs = rendering, clients, uint64(time.Since(start).Milliseconds())
				r.State = "active"
				if !rendering {
					r.State = "suspended"
				}
			case wayray.MsgPing:
			case wayray.MsgDestroy:
				_ = wayray.WriteMsg(c, wayray.MsgReply, f.ID, r)
				return 0
			default:
				r = wayray.Reply{Code: wayray.CodeUnknownRequest, Error: "unknown request"}
			}
			if err := wayray.WriteMsg(c, wayray.MsgReply, f.ID, r); err != nil {
				break
			}
		}
		c.Close()
	}
}
