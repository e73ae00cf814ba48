package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/proto"
	"github.com/hotdesk/hotdesk/proto/prototest"
)

// runAttacks throws every attack of the suite at the daemon, one kind after
// the other (some kinds in parallel), recording each in al.
func runAttacks(ctx context.Context, t *testing.T, al *attackLog, e *e2e, pin []byte, token, attachAddr string,
	good *goodTerm, lastTicket *atomic.Pointer[proto.Attached], redeems *atomic.Int32, bin string) {
	addr := e.addr
	tlsCfg := prototest.PinnedTLS(t, pin)
	par := func(n int, f func(i int)) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				f(i)
			}()
		}
		wg.Wait()
	}
	// greeted runs n attackers of kind: attacker i gets a connection past
	// Hello, from source src(from(i)) as terminal name-i, and owns it; one
	// refused before that counts as refused.
	// greetedW is greeted with the connection's Welcome.
	greetedW := func(kind, name string, n int, from func(i int) int, attack func(i int, pc *proto.Conn, w proto.Welcome)) {
		par(n, func(i int) {
			id := fmt.Sprintf("%s-%d", name, i)
			pc, w, err := helloConn(ctx, src(from(i)), addr, pin, id)
			if err != nil {
				al.try(kind, true, "")
				return
			}
			attack(i, pc, w)
		})
	}
	greeted := func(kind, name string, n int, from func(i int) int, attack func(i int, pc *proto.Conn)) {
		greetedW(kind, name, n, from, func(i int, pc *proto.Conn, _ proto.Welcome) { attack(i, pc) })
	}
	junk := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}

	// Garbage, non-TLS, to both listeners.
	par(200, func(i int) {
		target := addr
		if i%2 == 1 {
			target = attachAddr
		}
		c, err := dialFrom(ctx, src(i%40), target, nil)
		if err != nil {
			al.try("garbage", true, "")
			return
		}
		defer c.Close()
		if i%4 < 2 {
			c.Write(junk(1024))
			al.try("garbage", closedByServer(c, 10*time.Second), "garbage not closed")
		} else {
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			al.try("non_tls", closedByServer(c, 10*time.Second), "plain HTTP not closed")
		}
	})

	// Wrong or no ALPN.
	par(40, func(i int) {
		cfg := tlsCfg.Clone()
		cfg.NextProtos = [][]string{{"h2"}, nil}[i%2]
		c, err := dialFrom(ctx, src(40+i%10), addr, cfg)
		if err == nil {
			// The server refuses after its side of the handshake.
			pc := proto.NewConn(c)
			_, err = proto.ClientHandshake(pc, proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "alpn"})
			c.Close()
		}
		al.try("wrong_alpn", err != nil, "handshake with wrong ALPN succeeded")
	})

	// Bad length prefixes, huge and deep CBOR, before and after Hello.
	deep := bytes.Repeat([]byte{0x81}, 60000) // 60,000 nested arrays
	hugeMap := []byte{0xa2, 0x01, 0x03, 0x02, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0}
	hugeStr := []byte{0xa2, 0x01, 0x03, 0x02, 0xa1, 0x01, 0x7b, 0, 0, 0, 1, 0, 0, 0, 0}
	payloads := []struct {
		kind string
		raw  []byte
	}{
		{"bad_length", []byte{0xff, 0xff, 0xff, 0xff}},
		{"bad_length", []byte{0, 0, 0, 0}},
		{"bad_length", append([]byte{0, 1, 0, 1}, junk(100)...)}, // announces 65537
		{"deep_cbor", frame(deep)},
		{"huge_cbor", frame(hugeMap)},
		{"huge_cbor", frame(hugeStr)},
		{"huge_cbor", frame(junk(proto.MaxFrame))},
	}
	par(len(payloads)*8, func(i int) {
		p := payloads[i%len(payloads)]
		var c net.Conn
		var err error
		if i/len(payloads)%2 == 0 {
			c, err = dialFrom(ctx, src(60+i%10), addr, tlsCfg) // before Hello
		} else {
			var pc *proto.Conn
			pc, _, err = helloConn(ctx, src(60+i%10), addr, pin, fmt.Sprintf("frames-%d", i))
			if err == nil {
				c = pc.NetConn()
			}
		}
		if err != nil {
			al.try(p.kind, true, "")
			return
		}
		defer c.Close()
		c.Write(p.raw)
		al.try(p.kind, closedByServer(c, 10*time.Second), "connection kept after a bad frame")
	})

	// Slowloris: a TLS ClientHello a byte at a time, and a Hello frame a
	// byte at a time; the handshake deadline cuts both.
	par(60, func(i int) {
		c, err := dialFrom(ctx, src(80+i%20), addr, nil)
		if err != nil {
			al.try("slowloris", true, "")
			return
		}
		defer c.Close()
		hello := append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, junk(200)...)
		cut := false
		for j := 0; j < len(hello) && !cut; j++ {
			if _, err := c.Write(hello[j : j+1]); err != nil {
				cut = true
				break
			}
			time.Sleep(200 * time.Millisecond)
			if j > 40 { // well past the deadline
				break
			}
		}
		al.try("slowloris", cut || closedByServer(c, 15*time.Second), "slow client never cut")
	})

	// The attach gateway held full of slow handshakes: advHogSources
	// addresses, each at its max_unauthenticated_per_source, more than the
	// gateway's connection budget. The good terminal must still attach
	// meanwhile (a newcomer from a source holding none evicts the oldest
	// handshake of a source holding the most), and every hog is cut.
	var hogs sync.WaitGroup
	hogDialed := make(chan struct{}, advHogSources*16)
	for i := range advHogSources * 16 {
		hogs.Add(1)
		go func() {
			defer hogs.Done()
			c, err := dialFrom(ctx, src(130+i%advHogSources), attachAddr, nil)
			hogDialed <- struct{}{}
			if err != nil {
				al.try("gateway_hog", true, "")
				return
			}
			defer c.Close()
			al.try("gateway_hog", closedByServer(c, 3*advHandshake), "slow handshake held past the handshake deadline")
		}()
	}
	for range advHogSources * 16 {
		<-hogDialed
	}
	from := redeems.Load()
	hogDeadline := time.Now().Add(advHandshake)
	for redeems.Load() < from+2 && time.Now().Before(hogDeadline) {
		time.Sleep(10 * time.Millisecond)
	}
	al.try("gateway_hog", redeems.Load() >= from+2,
		fmt.Sprintf("the good terminal attached %d times while the gateway was full of slow handshakes; want 2", redeems.Load()-from))
	hogs.Wait()

	// 2,000 idle connections from 40 addresses, held for 3 s.
	var idle []net.Conn
	var idleMu sync.Mutex
	refusedIdle := 0
	par(2000, func(i int) {
		c, err := dialFrom(ctx, src(100+i%40), addr, nil)
		if err != nil {
			al.try("idle_connection", true, "")
			return
		}
		idleMu.Lock()
		idle = append(idle, c)
		idleMu.Unlock()
	})
	// Every one must be closed within a bound: the handshake deadline
	// runs from the accept, and a connection the kernel queued while the
	// daemon was at its caps is accepted (and its deadline started) late.
	time.Sleep(3 * time.Second)
	idleDeadline := time.Now().Add(4 * advHandshake)
	for _, c := range idle {
		closed := closedByServer(c, max(time.Until(idleDeadline), time.Millisecond))
		if closed {
			refusedIdle++
		}
		// Idle connections beyond the caps are closed at once; the others
		// by the handshake deadline.
		al.try("idle_connection", closed, "idle connection held past the handshake deadline")
		c.Close()
	}
	t.Logf("idle connections: %d opened, %d closed by the daemon", len(idle), refusedIdle)

	// Out-of-state messages after Hello.
	greeted("out_of_state", "oos", 60, func(i int) int { return 150 + i%10 }, func(i int, pc *proto.Conn) {
		defer pc.Close()
		bodies := []any{
			&proto.Welcome{Version: proto.Version, ServerID: "x", Nonce: make([]byte, 32)},
			&proto.Attached{SessionID: "s", Token: token, ServerID: "adv"},
			&proto.Challenge{ID: 1, Token: token, Nonce: make([]byte, 32), ServerID: "adv"},
			&proto.AttachOK{SessionID: "s"},
			&proto.Hello{Versions: []uint16{proto.Version}, TerminalID: "again"},
		}
		// Unsolicited answers are dropped; the connection stays usable.
		pc.Send(&proto.Proof{ID: 77, Token: token, Signature: make([]byte, 64)})
		pc.Send(&proto.AuthAnswer{ID: 78, Text: "x"})
		pc.Send(bodies[i%len(bodies)])
		al.try("out_of_state", closedByServer(pc.NetConn(), 10*time.Second), "server-only message accepted")
	})

	// Forged and replayed proofs for the good terminal's token.
	greeted("forged_proof", "forger", 40, func(i int) int { return 160 + i%10 }, func(i int, pc *proto.Conn) {
		defer pc.Close()
		pc.Send(&proto.TokenInserted{Token: token})
		kind := "forged_proof"
		for {
			_ = pc.NetConn().SetReadDeadline(time.Now().Add(15 * time.Second))
			m, err := pc.Recv()
			if err != nil {
				al.try(kind, true, "")
				return
			}
			switch b := m.Body.(type) {
			case *proto.Challenge:
				sig := make([]byte, 64)
				rand.Read(sig)
				if i%2 == 1 {
					kind = "replayed_proof"
					good.mu.Lock()
					if good.lastProof != nil {
						sig = good.lastProof.Signature
					}
					good.mu.Unlock()
				}
				pc.Send(&proto.Proof{ID: b.ID, Token: b.Token, Signature: sig})
			case *proto.Attached:
				al.try(kind, false, "attacker attached to the good session")
				return
			case *proto.Error:
				al.try(kind, true, "")
				return
			}
		}
	})

	// Random and hostile token ids, and password logins that never answer.
	hostile := []string{"uid.zz", "uid.04A1B2C3", "uid." + strings.Repeat("a", 60000), "user.\n\x1b[31mINJECTED",
		"../../etc/passwd", "soft.", ".x", "", "piv.\x00\x01", "user." + strings.Repeat("é", 100), "hce.%s%n"}
	greeted("hostile_token", "tok", 200, func(i int) int { return 170 + i%20 }, func(i int, pc *proto.Conn) {
		defer pc.Close()
		tok := hostile[i%len(hostile)]
		if i >= len(hostile)*4 {
			tok = fmt.Sprintf("uid.%x", junk(4+i%7))
		}
		pc.Send(&proto.TokenInserted{Token: tok})
		_ = pc.NetConn().SetReadDeadline(time.Now().Add(15 * time.Second))
		for {
			m, err := pc.Recv()
			if err != nil {
				al.try("hostile_token", true, "")
				return
			}
			switch m.Body.(type) {
			case *proto.Attached, *proto.AuthPrompt:
				al.try("hostile_token", false, fmt.Sprintf("token %.40q got %T", tok, m.Body))
				return
			case *proto.Error, *proto.Redirect:
				al.try("hostile_token", true, "")
				return
			}
		}
	})
	// The stallers ping as a terminal does, at the Welcome's interval:
	// the logins they hold stay held (a silent connection is dropped after
	// 3 intervals, which would free its slot, and on a loaded machine could
	// come before the prompt), and only the login limits can refuse them.
	stalled := 0
	var stallConns []*proto.Conn
	var stallMu sync.Mutex
	var pingers sync.WaitGroup
	stopPings := make(chan struct{})
	greeted("login_stall", "stall", 40, func(int) int { return 200 }, func(i int, pc *proto.Conn) {
		pingers.Add(1)
		go func() { // ends at stopPings or when pc is closed
			defer pingers.Done()
			keepPinging(pc, good.welcome, stopPings)
		}()
		pc.Send(&proto.TokenInserted{Token: fmt.Sprintf("user.stall%d", i)})
		_ = pc.NetConn().SetReadDeadline(time.Now().Add(15 * time.Second))
		m, err := pc.Recv()
		for err == nil && m.Type == proto.TypePong { // the answers to the pings
			m, err = pc.Recv()
		}
		switch b := m.Body.(type) {
		case *proto.AuthPrompt:
			stallMu.Lock()
			stalled++
			stallConns = append(stallConns, pc) // never answered
			stallMu.Unlock()
			al.try("login_stall", true, "")
		case *proto.Error:
			al.try("login_stall", b.Code == proto.ErrRateLimited || b.Code == proto.ErrAuthFailed, fmt.Sprintf("error %v", b.Code))
			pc.Close()
		default:
			al.try("login_stall", err != nil, fmt.Sprintf("%T", m.Body))
			pc.Close()
		}
	})
	if stalled > 8 {
		al.try("login_stall", false, fmt.Sprintf("%d stalled logins from one address admitted; want at most 8", stalled))
	}
	close(stopPings)
	pingers.Wait()
	for _, c := range stallConns {
		c.Close()
	}

	// Attach tickets: random, reused, stolen by another terminal id.
	par(60, func(i int) {
		var tk []byte
		kind := "ticket_random"
		switch {
		case i%3 == 1:
			if a := lastTicket.Load(); a != nil {
				tk, kind = a.Ticket, "ticket_reuse_or_theft"
			}
		case i%3 == 2:
			tk = []byte("\x00")
		}
		if tk == nil {
			tk = junk(32)
		}
		err := redeem(ctx, src(210+i%10), attachAddr, pin, tk, fmt.Sprintf("thief-%d", i))
		al.try(kind, err != nil, "ticket redeemed by an attacker")
	})

	// Pairing codes guessed from one address lock out that address only.
	// The guesser proves its own key (so that the guess reaches the code)
	// or not (a key it does not hold, a victim's).
	greetedW("pairing_guess", "pairguess", 30, func(int) int { return 220 }, func(i int, pc *proto.Conn, w proto.Welcome) {
		defer pc.Close()
		code := fmt.Sprintf("%04X-AAAA-BBBB", i)
		pub, key, _ := ed25519.GenerateKey(rand.Reader)
		sig := pairSig(fmt.Sprintf("pairguess-%d", i), w, key, code)
		if i%2 == 1 {
			pub = junk(32)
		}
		pc.Send(&proto.Pair{Code: code, Kind: "soft", PublicKey: pub, Signature: sig})
		_ = pc.NetConn().SetReadDeadline(time.Now().Add(15 * time.Second))
		m, err := pc.Recv()
		_, paired := m.Body.(*proto.Paired)
		al.try("pairing_guess", err != nil || !paired, "guessed code paired")
	})

	// The admin socket from an unprivileged uid: the file mode refuses it;
	// with the mode opened up, the peer-credential check does. hotdeskctl
	// is copied where nobody may run it.
	ctlDir, err := os.MkdirTemp("", "hd-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(ctlDir)
	// A hard link, not a copy: a file this process just wrote can be held
	// open for writing by a child another test forks meanwhile, and exec
	// fails with "text file busy".
	ctl := filepath.Join(ctlDir, "hotdeskctl")
	if err := os.Link(filepath.Join(bin, "hotdeskctl"), ctl); err != nil {
		t.Fatal(err)
	}
	os.Chmod(ctlDir, 0o755)
	for _, open := range []bool{false, true} {
		if open {
			os.Chmod(e.socket, 0o666)
			for d := filepath.Dir(e.socket); d != "/" && d != "/tmp"; d = filepath.Dir(d) {
				os.Chmod(d, 0o755)
			}
		}
		out, err := exec.CommandContext(ctx, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			ctl, "-socket", e.socket, "sessions").CombinedOutput()
		// Refused by the socket's mode (permission denied) or by the peer
		// check (403); anything else (hotdeskctl not run at all) is not a
		// test of the daemon.
		why := "permission denied"
		if open {
			why = "may not use the admin API"
		}
		if err == nil || !strings.Contains(string(out), why) {
			t.Errorf("hotdeskctl as nobody (socket open to all: %v): %v: %s; want refused with %q", open, err, out, why)
		}
		al.try("admin_unprivileged", err != nil, "hotdeskctl as nobody: "+string(out))
	}
	os.Chmod(e.socket, 0o660)

	// FD exhaustion: more authenticated connections than the daemon has
	// descriptors (RLIMIT_NOFILE advNoFile), from 20 addresses.
	var held []*proto.Conn
	var heldMu sync.Mutex
	failedDial := 0
	par(advNoFile+100, func(i int) {
		pc, _, err := helloConn(ctx, src(230+i%20), addr, pin, fmt.Sprintf("fd-%d", i))
		heldMu.Lock()
		defer heldMu.Unlock()
		if err != nil {
			failedDial++
			return
		}
		held = append(held, pc)
	})
	time.Sleep(time.Second) // the good terminal hot-desks with no descriptor to spare
	al.try("fd_exhaustion", failedDial > 0, fmt.Sprintf("all %d connections accepted with RLIMIT_NOFILE %d", len(held), advNoFile))
	t.Logf("fd exhaustion: %d connections held, %d refused or failed", len(held), failedDial)
	for _, c := range held {
		c.Close()
	}
	// After the flood the daemon accepts again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		pc, _, err := helloConn(ctx, src(250), addr, pin, "after-flood")
		if err == nil {
			pc.Close()
			break
		}
		if time.Now().After(deadline) {
			al.try("fd_exhaustion", false, "daemon does not accept after the flood: "+err.Error())
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = binary.BigEndian
	_ = tls.VersionTLS13
}
