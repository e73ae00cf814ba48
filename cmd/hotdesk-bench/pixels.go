package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hotdesk/hotdesk/cmd/hotdesk-term/rdpwake"
	"github.com/hotdesk/hotdesk/compositor/weston"
	"github.com/hotdesk/hotdesk/internal/xvfb"
	"github.com/hotdesk/hotdesk/registry"
	"github.com/hotdesk/hotdesk/tokens/soft"
)

// The pixels scenario measures what a person sees: the time from the
// terminal's token event until the terminal's screen shows the session's
// current frame. Everything is real: a weston RDP desktop started by the
// broker's compositor backend, the broker's attach gateway, the terminal
// agent (the hotdesk-term binary, run as a process) with its display
// client (FreeRDP) on its own Xvfb, the token moved between two such
// terminals. The screens are read directly from the X servers (MIT-SHM
// GetImage on one X connection each, see xscreen.go) whenever the X server
// reports a change (DAMAGE), and at least every pixelsFallback; no process
// is started per read.
const pixelsNotes = "PIXELS: real weston RDP desktop (a tiled background and weston-flower), the broker's attach gateway, " +
	"hotdesk-term processes with their display client under Xvfb (FreeRDP with hotdesk-rdpwake preloaded unless rdpwake is false); " +
	"the token is pulled at one terminal and inserted at the other once that terminal's display client waits at its relay; " +
	"t0 = the insert written to the agent (its token event), done = the terminal's X screen (read with MIT-SHM at every change DAMAGE reports) matches the session's " +
	"current frame (the frame the previous terminal showed); breakdown: broker = t0 → Attached at the agent, " +
	"display_start = Attached → the display client connected to the agent's relay (0 when it was waiting already), " +
	"transport = relay → gateway dial, TLS, ticket and the gateway's dial to weston, rdp_connect = stream spliced → the client's window mapped, " +
	"first_frame = mapped → first session pixels, complete_frame = first pixels → the whole frame matches; " +
	"baseline = FreeRDP started straight at weston's RDP port (no hotdesk) on the same screen, same command, same measurement"

const (
	// pixelsPoll is the screen read interval where the X server has no
	// DAMAGE extension.
	pixelsPoll = 4 * time.Millisecond
	// pixelsFallback: with DAMAGE, the screen is read at every reported
	// change and at least this often.
	pixelsFallback = 100 * time.Millisecond
	// pixelsRoundTimeout bounds one hot-desk until the frame matches.
	pixelsRoundTimeout = 30 * time.Second
	// pixelsStable: a frame unchanged this long is the session's current frame.
	pixelsStable = 500 * time.Millisecond
	// pixelsStableTimeout bounds the wait for a stable frame;
	// pixelsFirstTimeout the first desktop's, which includes weston's
	// start (on a loaded machine its first frame came after 15 s).
	pixelsStableTimeout = 15 * time.Second
	pixelsFirstTimeout  = 45 * time.Second
	// Frame comparison: samples every pixelsStep-th pixel and row; a
	// sample differs when a channel differs by more than pixelsTol.
	pixelsStep = 2
	pixelsTol  = 24
	// pixelsMatch: at most this fraction of samples may differ for a
	// frame to match (RDP codecs are lossy, the cursor may be drawn).
	pixelsMatch = 0.005
	// pixelsFirst: at least this fraction differs from black at the first
	// frame.
	pixelsFirst = 0.01
	// maxPixelsRounds bounds -n for this scenario: every round is a real
	// RDP connection.
	maxPixelsRounds = 200
	pixelsToken     = "default"
)

// pixelsDisplayDefault is the display command the terminals run unless
// -pixels-display says otherwise: "freerdp", the agent's built-in FreeRDP
// command, which the baseline runs as pixelsFreeRDP (kept in step with
// freeRDPCommand in cmd/hotdesk-term/display.go).
const (
	pixelsDisplayDefault = "freerdp"
	pixelsFreeRDP        = "xfreerdp /v:{addr} /cert:ignore /sec:tls /bpp:24 -compression /audio-mode:2 -clipboard /f"
)

// pixelsConfig sizes the scenario (flags of hotdesk-bench).
type pixelsConfig struct {
	rounds        int    // token moves measured (≥ 1); baseline rounds as many
	width, height int    // screen and desktop size
	display       string // display command of the terminals ({addr}, {size})
	termBin       string // hotdesk-term binary; "" builds it
	// rdpwake: build hotdesk-rdpwake and preload it into every FreeRDP
	// (the terminals' and the baseline's).
	rdpwake bool
}

// pixelTiming is one hot-desk's timeline, as durations from t0.
type pixelTiming struct {
	attached, clientUp, spliced, mapped, first, done time.Duration
}

// pixels runs the scenario with b.px (see pixelsConfig).
func (b *bench) pixels(ctx context.Context) (row, error) {
	r := b.newRow("pixels")
	r.Notes = pixelsNotes
	// nft: weston's RDP port is guarded (compositor/weston).
	for _, tool := range []string{"Xvfb", "xfreerdp", "weston", "weston-flower", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			r.Skipped = true
			r.Notes = fmt.Sprintf("SKIPPED: %s not installed (Debian packages xvfb freerdp2-x11 weston nftables); %s", tool, r.Notes)
			return r, nil
		}
	}
	cfg := b.px
	if cfg.rounds <= 0 {
		cfg.rounds = 20
	}
	cfg.rounds = min(cfg.rounds, maxPixelsRounds)
	if cfg.display == "" {
		cfg.display = pixelsDisplayDefault
	}
	r.Display = cfg.display
	r.RDPWake = ptr(cfg.rdpwake)
	r.LoadBefore = loadAvg()
	dir, err := os.MkdirTemp("", "hdpx-") // short: weston's socket path must fit
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)

	px, err := b.startPixels(ctx, dir, cfg)
	if err != nil {
		return r, err
	}
	defer px.close()

	res, err := px.run(ctx)
	if err != nil {
		return r, err
	}
	if px.appEnded() {
		r.Notes += "; THE APPLICATION ENDED during the run (weston-flower, a toytoolkit client, does not survive every " +
			"removal of an RDP peer's seat): the rounds after it matched the desktop without it"
	}
	r.LoadAfter = loadAvg()
	var total, broker, start, transport, rdp, first, complete []time.Duration
	for _, t := range res.rounds {
		total = append(total, t.done)
		broker = append(broker, t.attached)
		start = append(start, t.clientUp-t.attached)
		transport = append(transport, t.spliced-t.clientUp)
		rdp = append(rdp, t.mapped-t.spliced)
		first = append(first, t.first-t.mapped)
		complete = append(complete, t.done-t.first)
	}
	r.fill(total, b.etcdP99)
	r.Errors = res.errors
	r.Rounds = ptr(cfg.rounds)
	r.BrokerP50, r.BrokerP99 = p50p99(broker)
	r.DisplayStartP50, r.DisplayStartP99 = p50p99(start)
	r.TransportP50, r.TransportP99 = p50p99(transport)
	r.RDPConnectP50, r.RDPConnectP99 = p50p99(rdp)
	r.FirstFrameP50, r.FirstFrameP99 = p50p99(first)
	r.CompleteFrameP50, r.CompleteFrameP99 = p50p99(complete)
	var base []time.Duration
	for _, t := range res.baseline {
		base = append(base, t.done)
	}
	r.BaselineN = ptr(len(base))
	r.BaselineP50, r.BaselineP99 = p50p99(base)
	r.Target = "p50 ≤ 500 ms, p99 ≤ 800 ms"
	r.TargetOK = ptr(r.N > 0 && r.P50 <= 500 && r.P99 <= 800)
	return r, nil
}

// loadAvg is the 1-minute load average of the machine ("" if unknown).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// pixelsRig is the running scenario: a broker with weston RDP desktops and
// an attach gateway, two terminals on two X screens.
type pixelsRig struct {
	b       *bench
	wakeLib string // hotdesk-rdpwake, "" if not preloaded
	cfg     pixelsConfig
	dir     string
	node    *node
	comp    *weston.Backend
	terms   [2]*pixelTerm
	// undrain restores the group's other brokers.
	undrain func()
	app     *exec.Cmd
	appDone chan struct{} // closed when the application has ended
}

// appEnded reports whether the session's application has ended.
func (px *pixelsRig) appEnded() bool {
	if px.appDone == nil {
		return false
	}
	select {
	case <-px.appDone:
		return true
	default:
		return false
	}
}

// pixelTerm is one terminal: an Xvfb, a screen reader on it and the agent.
type pixelTerm struct {
	id     string
	disp   string
	xvfb   *xvfb.Server
	scr    *xscreen
	agent  *exec.Cmd
	stdin  io.WriteCloser
	events chan agentEvent
	done   chan struct{} // the event reader ended
	// ready: the agent's display client waits at its relay (a
	// "display_ready" event since the last "display").
	ready atomic.Bool
}

// agentEvent is one JSON line of hotdesk-term.
type agentEvent struct {
	name string
	at   time.Time
	f    map[string]any
}

func (b *bench) startPixels(ctx context.Context, dir string, cfg pixelsConfig) (px *pixelsRig, err error) {
	px = &pixelsRig{b: b, cfg: cfg, dir: dir}
	defer func() {
		if err != nil {
			px.close()
			px = nil
		}
	}()
	if cfg.termBin == "" {
		cfg.termBin = filepath.Join(dir, "hotdesk-term")
		build := exec.CommandContext(ctx, "go", "build", "-o", cfg.termBin, "github.com/hotdesk/hotdesk/cmd/hotdesk-term")
		if out, err := build.CombinedOutput(); err != nil {
			return px, fmt.Errorf("bench: pixels: building hotdesk-term: %w: %s", err, out)
		}
		px.cfg.termBin = cfg.termBin
	}
	if cfg.rdpwake {
		px.wakeLib = filepath.Join(dir, rdpwake.Name)
		if err := rdpwake.Build(ctx, "", px.wakeLib); err != nil {
			return px, fmt.Errorf("bench: pixels: %w", err)
		}
	}
	ini := filepath.Join(dir, "weston.ini")
	// A desktop with texture and an application; no panel (its clock
	// would change the frame every minute); no on-screen keyboard, as
	// hotdeskd's own desktops (compositor/weston's session weston.ini).
	if err := os.WriteFile(ini, []byte("[core]\nidle-time=0\n[shell]\npanel-position=none\n"+
		"background-image=/usr/share/weston/pattern.png\nbackground-type=tile\n[input-method]\npath=\n"), 0o644); err != nil {
		return px, err
	}
	comp, err := weston.New(weston.Config{
		Backend: "rdp", StateDir: filepath.Join(dir, "s"),
		RunAsUser: true, // never a root desktop: "bench" runs as a pooled kiosk account
		ExtraArgs: append(westonRDPArgs(cfg), "--config="+ini),
		Logger:    b.log.Named("weston"),
	})
	if err != nil {
		return px, fmt.Errorf("bench: pixels: %w", err)
	}
	px.comp = comp
	gcfg := groupConfig{Dir: dir, Log: b.log}
	eps := b.g.etcd.Endpoints()
	if px.node, err = startNodeWith(ctx, gcfg, "px", eps[0], nodeOptions{comp: comp, attach: true}); err != nil {
		px.comp = nil // closed by startNodeWith
		return px, err
	}
	px.comp = nil // the node owns it now
	if px.undrain, err = b.g.placeOn(ctx, px.node); err != nil {
		return px, err
	}

	ks, err := soft.OpenKeystore(filepath.Join(dir, "keys.json"))
	if err != nil {
		return px, err
	}
	key, err := ks.Generate(pixelsToken, "bench")
	if err != nil {
		return px, err
	}
	if err := ks.Save(); err != nil {
		return px, err
	}
	if err := px.node.reg.EnrollToken(ctx, registry.TokenRecord{ID: key.Token, Kind: soft.Kind, PublicKey: key.Public, User: "bench"}); err != nil {
		return px, fmt.Errorf("bench: pixels: enroll: %w", err)
	}
	for i := range px.terms {
		t, err := px.startTerm(ctx, fmt.Sprintf("px-t%d", i+1), filepath.Join(dir, "keys.json"))
		if err != nil {
			return px, err
		}
		px.terms[i] = t
	}
	return px, nil
}

// westonRDPArgs are the compositor's RDP options for the bench: its
// desktop has the terminals' size, so no client resizes it.
func westonRDPArgs(cfg pixelsConfig) []string {
	return []string{"--width=" + strconv.Itoa(cfg.width), "--height=" + strconv.Itoa(cfg.height)}
}

// wakeEnv is $HOTDESK_RDPWAKE for the agents: the library, or "off".
func (px *pixelsRig) wakeEnv() string {
	if px.wakeLib == "" {
		return "off"
	}
	return px.wakeLib
}

func (px *pixelsRig) size() string { return fmt.Sprintf("%dx%d", px.cfg.width, px.cfg.height) }

// startXvfb starts an X server on a free display and connects a reader.
func startXvfb(ctx context.Context, w, h int) (*xvfb.Server, *xscreen, error) {
	x, err := xvfb.Start(ctx, fmt.Sprintf("%dx%dx24", w, h), setPdeathsig, "-noreset")
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	scr, err := openXScreen(x.Display)
	if err != nil {
		x.Stop()
		return nil, nil, fmt.Errorf("bench: Xvfb: %w", err)
	}
	return x, scr, nil
}

func (px *pixelsRig) startTerm(ctx context.Context, id, keystore string) (*pixelTerm, error) {
	x, scr, err := startXvfb(ctx, px.cfg.width, px.cfg.height)
	if err != nil {
		return nil, err
	}
	t := &pixelTerm{id: id, disp: x.Display, xvfb: x, scr: scr, events: make(chan agentEvent, 256), done: make(chan struct{})}
	display := strings.ReplaceAll(px.cfg.display, "{size}", px.size())
	t.agent = exec.Command(px.cfg.termBin, "-server", px.node.addr, "-pin", "sha256:"+hex.EncodeToString(px.node.pin),
		"-id", id, "-keystore", keystore, "-json", "-display", display, "run")
	t.agent.Env = append(os.Environ(), "DISPLAY="+t.disp, rdpwake.EnvPath+"="+px.wakeEnv())
	t.agent.Stderr = io.Discard
	if px.b.log.IsDebug() {
		t.agent.Stderr = os.Stderr
	}
	setPdeathsig(t.agent)
	if t.stdin, err = t.agent.StdinPipe(); err != nil {
		t.close()
		return nil, err
	}
	out, err := t.agent.StdoutPipe()
	if err != nil {
		t.close()
		return nil, err
	}
	if err := t.agent.Start(); err != nil {
		t.agent = nil
		t.close()
		return nil, fmt.Errorf("bench: hotdesk-term: %w", err)
	}
	go t.read(out)
	if _, err := t.await(ctx, "connected", 20*time.Second); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// read turns the agent's JSON lines into events until its stdout ends.
func (t *pixelTerm) read(r io.Reader) {
	defer close(t.done)
	defer close(t.events)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		var f map[string]any
		if json.Unmarshal(sc.Bytes(), &f) != nil {
			continue
		}
		name, _ := f["event"].(string)
		switch name {
		case "display_ready":
			t.ready.Store(true)
		case "display":
			t.ready.Store(false)
		}
		ts, _ := f["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			at = time.Now()
		}
		select {
		case t.events <- agentEvent{name: name, at: at, f: f}:
		default: // nobody reads: drop rather than block the agent
		}
	}
}

// drain forgets queued events.
func (t *pixelTerm) drain() {
	for {
		select {
		case <-t.events:
		default:
			return
		}
	}
}

// await returns the next event named name; an error event fails it.
func (t *pixelTerm) await(ctx context.Context, name string, d time.Duration) (agentEvent, error) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case ev, ok := <-t.events:
			if !ok {
				return ev, fmt.Errorf("bench: terminal %s ended waiting for %q", t.id, name)
			}
			if ev.name == name {
				return ev, nil
			}
			if ev.name == "error" {
				return ev, fmt.Errorf("bench: terminal %s waiting for %q: error event %v", t.id, name, ev.f)
			}
		case <-tm.C:
			return agentEvent{}, fmt.Errorf("bench: terminal %s: no %q in %v", t.id, name, d)
		case <-ctx.Done():
			return agentEvent{}, ctx.Err()
		}
	}
}

func (t *pixelTerm) command(line string) error {
	_, err := io.WriteString(t.stdin, line+"\n")
	return err
}

// close stops the agent (end of input, then SIGKILL after a bound), the
// reader and Xvfb.
func (t *pixelTerm) close() {
	if t.agent != nil && t.agent.Process != nil {
		t.stdin.Close()
		exited := make(chan struct{})
		go func() { _ = t.agent.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = t.agent.Process.Kill()
			<-exited
		}
	}
	if t.scr != nil {
		t.scr.close()
	}
	if t.xvfb != nil {
		_ = t.xvfb.Cmd.Process.Signal(syscall.SIGTERM)
		<-t.xvfb.Exited
	}
}

func (px *pixelsRig) close() {
	for _, t := range px.terms {
		if t != nil {
			t.close()
		}
	}
	if px.app != nil {
		_ = px.app.Process.Kill()
		<-px.appDone
	}
	if px.undrain != nil {
		px.undrain()
	}
	if px.node != nil {
		px.node.close() // destroys the desktops
	}
	if px.comp != nil {
		px.comp.Close()
	}
}

// pixelsResult is what run measured.
type pixelsResult struct {
	rounds, baseline []pixelTiming
	errors           int
}

// frames holds the buffers of one terminal's screen reads.
type frames struct {
	black, cur, prev, ref []byte
}

func newFrames(n int) *frames {
	return &frames{black: make([]byte, n), cur: make([]byte, n), prev: make([]byte, n), ref: make([]byte, n)}
}

// run: a first attach (not counted) creates the desktop and starts an
// application in it; then the token moves cfg.rounds times between the
// two terminals; then the baseline: FreeRDP straight at weston as often.
func (px *pixelsRig) run(ctx context.Context) (res pixelsResult, err error) {
	t1 := px.terms[0]
	fr := newFrames(t1.scr.frameBytes())
	if err := t1.command("insert " + pixelsToken); err != nil {
		return res, err
	}
	att, err := t1.await(ctx, "attached", pixelsRoundTimeout)
	if err != nil {
		return res, err
	}
	session, _ := att.f["session"].(string)
	if err := px.stableWithin(ctx, t1, fr, pixelsFirstTimeout); err != nil {
		return res, fmt.Errorf("bench: pixels: first desktop: %w", err)
	}
	// An application in the session, so that its frame is not only the
	// background.
	px.app = exec.Command("weston-flower")
	px.app.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+filepath.Join(px.dir, "s", session, "run"), "WAYLAND_DISPLAY=wayland-hd")
	setPdeathsig(px.app)
	if err := px.app.Start(); err != nil {
		px.app = nil
		return res, fmt.Errorf("bench: pixels: weston-flower: %w", err)
	}
	px.appDone = make(chan struct{})
	go func() { _ = px.app.Wait(); close(px.appDone) }()
	copy(fr.prev, fr.ref)
	if err := waitScreen(ctx, t1.scr, pixelsStableTimeout, func() (bool, error) {
		if err := t1.scr.grab(fr.cur); err != nil {
			return false, err
		}
		return frameDiff(fr.cur, fr.prev, t1.scr.w, t1.scr.h, pixelsStep, pixelsTol) > 0.001, nil
	}); err != nil {
		return res, fmt.Errorf("bench: pixels: the application never showed: %w", err)
	}
	if err := px.stable(ctx, t1, fr); err != nil {
		return res, err
	}

	var ec errCounter
	at := 0 // terminal holding the token
	for i := 0; i < px.cfg.rounds; i++ {
		x, err := px.move(ctx, session, px.terms[at], px.terms[1-at], fr)
		if err == nil {
			res.rounds = append(res.rounds, x)
			px.b.log.Info("pixels round", "round", i, "attached", x.attached, "client_up", x.clientUp, "spliced", x.spliced,
				"mapped", x.mapped, "first", x.first, "done", x.done)
		} else {
			px.b.log.Warn("pixels round failed", "round", i, "error", err)
		}
		if ec.add(err) != nil {
			return res, fmt.Errorf("bench: pixels: %w", err)
		}
		at = 1 - at
	}
	res.errors = ec.total

	// Baseline: no hotdesk. The session is suspended (token pulled), and
	// FreeRDP is started straight at weston on the first terminal's screen.
	if err := px.pull(ctx, px.terms[at], fr); err != nil {
		return res, err
	}
	endpoint, err := px.endpoint(ctx, session)
	if err != nil {
		return res, err
	}
	for i := 0; i < px.cfg.rounds; i++ {
		x, err := px.direct(ctx, px.terms[0], endpoint, fr)
		if err == nil {
			res.baseline = append(res.baseline, x)
		} else {
			px.b.log.Warn("pixels baseline round failed", "round", i, "error", err)
		}
		if ec.add(err) != nil {
			return res, fmt.Errorf("bench: pixels baseline: %w", err)
		}
	}
	return res, nil
}

// endpoint is the session's RDP host:port.
func (px *pixelsRig) endpoint(ctx context.Context, session string) (string, error) {
	infos, err := px.node.comp.List(ctx)
	if err != nil {
		return "", err
	}
	for _, in := range infos {
		if in.SessionID == session {
			if hp, ok := strings.CutPrefix(in.Endpoint, "rdp://"); ok {
				return hp, nil
			}
		}
	}
	return "", fmt.Errorf("bench: pixels: no RDP endpoint for session %s", session)
}

// stable waits until t's screen has not changed for pixelsStable and
// makes that frame the reference (the session's current frame).
func (px *pixelsRig) stable(ctx context.Context, t *pixelTerm, fr *frames) error {
	return px.stableWithin(ctx, t, fr, pixelsStableTimeout)
}

// stableWithin is stable, giving up after timeout.
func (px *pixelsRig) stableWithin(ctx context.Context, t *pixelTerm, fr *frames, timeout time.Duration) error {
	s := t.scr
	last := time.Now()
	if err := s.grab(fr.prev); err != nil {
		return err
	}
	err := waitScreen(ctx, s, timeout, func() (bool, error) {
		if err := s.grab(fr.cur); err != nil {
			return false, err
		}
		now := time.Now()
		if frameDiff(fr.cur, fr.prev, s.w, s.h, pixelsStep, 0) > 0 {
			last = now
			fr.prev, fr.cur = fr.cur, fr.prev
			return false, nil
		}
		return now.Sub(last) >= pixelsStable && frameDiff(fr.cur, fr.black, s.w, s.h, pixelsStep, pixelsTol) > pixelsFirst, nil
	})
	if err != nil {
		return fmt.Errorf("no stable frame at %s: %w", t.id, err)
	}
	copy(fr.ref, fr.cur)
	return nil
}

// waitBlack waits until t's screen is black: no desktop shown there.
func (px *pixelsRig) waitBlack(ctx context.Context, t *pixelTerm, fr *frames) error {
	s := t.scr
	err := waitScreen(ctx, s, pixelsRoundTimeout, func() (bool, error) {
		if err := s.grab(fr.cur); err != nil {
			return false, err
		}
		return frameDiff(fr.cur, fr.black, s.w, s.h, pixelsStep, pixelsTol) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("the desktop is still shown at %s after the token left: %w", t.id, err)
	}
	return nil
}

// waitReady waits until t's display client waits at its relay.
func waitReady(ctx context.Context, t *pixelTerm) error {
	deadline := time.Now().Add(pixelsRoundTimeout)
	for !t.ready.Load() {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: pixels: %s: display client not ready in %v", t.id, pixelsRoundTimeout)
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// errNoMatch: the screen never showed the session's frame.
var errNoMatch = errors.New("bench: pixels: the screen never matched the session's frame")

// watch reads s from t0 — at every change the X server reports — until
// its screen matches fr.ref, noting the first frame that is not black.
func watch(ctx context.Context, s *xscreen, fr *frames, t0 time.Time) (first, done time.Duration, err error) {
	deadline := t0.Add(pixelsRoundTimeout)
	for {
		s.rearm()
		if err := s.grab(fr.cur); err != nil {
			return 0, 0, err
		}
		now := time.Since(t0)
		if first == 0 && frameDiff(fr.cur, fr.black, s.w, s.h, 4, pixelsTol) > pixelsFirst {
			first = now
		}
		if first != 0 && frameDiff(fr.cur, fr.ref, s.w, s.h, pixelsStep, pixelsTol) <= pixelsMatch {
			return first, now, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return first, 0, errNoMatch
		}
		if err := s.wait(ctx, min(pixelsFallback, left)); err != nil {
			return 0, 0, err
		}
	}
}

// pull removes the token at t and waits until the session is detached
// and t's screen has gone black.
func (px *pixelsRig) pull(ctx context.Context, t *pixelTerm, fr *frames) error {
	if err := t.command("remove " + pixelsToken); err != nil {
		return err
	}
	if _, err := t.await(ctx, "detached", pixelsRoundTimeout); err != nil {
		return err
	}
	return px.waitBlack(ctx, t, fr)
}

// move pulls the token at from, checks from's screen goes black, inserts
// it at to and times to's screen until it matches the session's frame.
func (px *pixelsRig) move(ctx context.Context, session string, from, to *pixelTerm, fr *frames) (x pixelTiming, err error) {
	if err := px.pull(ctx, from, fr); err != nil {
		return x, err
	}
	if err := px.waitBlack(ctx, to, fr); err != nil {
		return x, err
	}
	// As at a real desk, where a person takes seconds to walk over: the
	// terminal's display client, restarted after it last showed the
	// session, waits at its relay (its start is not on the path).
	if err := waitReady(ctx, to); err != nil {
		return x, err
	}
	to.drain()
	t0 := time.Now()
	if err := to.command("insert " + pixelsToken); err != nil {
		return x, err
	}
	type evs struct {
		att, stream agentEvent
		err         error
	}
	evc := make(chan evs, 1)
	go func() {
		var e evs
		if e.att, e.err = to.await(ctx, "attached", pixelsRoundTimeout); e.err == nil {
			e.stream, e.err = to.await(ctx, "stream", pixelsRoundTimeout)
		}
		evc <- e
	}()
	first, done, werr := watch(ctx, to.scr, fr, t0)
	e := <-evc
	if werr != nil {
		px.shots(to, fr)
		// Whatever it shows now is the reference for the next round, so
		// that one bad reference cannot fail every round after it.
		if serr := px.stable(ctx, to, fr); serr != nil {
			px.b.log.Warn("pixels: no stable frame after a failed round", "terminal", to.id, "error", serr)
		}
		return x, werr
	}
	if e.err != nil {
		return x, e.err
	}
	if got, _ := e.att.f["session"].(string); got != session {
		return x, fmt.Errorf("bench: pixels: %s attached %q; want %q", to.id, got, session)
	}
	x.attached = e.att.at.Sub(t0)
	x.spliced = e.stream.at.Sub(t0)
	gw, _ := e.stream.f["gateway_ms"].(float64)
	x.clientUp = x.spliced - time.Duration(gw*float64(time.Millisecond))
	mapped, ok := to.scr.mappedSince(t0)
	if !ok || mapped.Sub(t0) > first {
		mapped = t0.Add(first) // no map seen (window mapped earlier): count it as the first frame
	}
	x.mapped = max(mapped.Sub(t0), x.spliced)
	x.first, x.done = max(first, x.mapped), done
	// The frame now shown is the session's current frame.
	if err := px.stable(ctx, to, fr); err != nil {
		return x, err
	}
	return x, nil
}

// shots writes the reference and the current frame of t as PNG files to
// $HOTDESK_BENCH_SHOTS, if set, for a person to look at.
func (px *pixelsRig) shots(t *pixelTerm, fr *frames) {
	dir := os.Getenv("HOTDESK_BENCH_SHOTS")
	if dir == "" {
		return
	}
	stamp := time.Now().Format("150405.000")
	for name, b := range map[string][]byte{"ref": fr.ref, "cur": fr.cur} {
		img := image.NewRGBA(image.Rect(0, 0, t.scr.w, t.scr.h))
		for i := 0; i+3 < len(img.Pix) && i+3 < len(b); i += 4 {
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = b[i+2], b[i+1], b[i], 0xff
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%s-%s.png", stamp, t.id, name)))
		if err != nil {
			return
		}
		_ = png.Encode(f, img)
		f.Close()
	}
}

// direct starts the display client straight at weston's endpoint on t's
// screen (no agent, no gateway) and times it the same way.
func (px *pixelsRig) direct(ctx context.Context, t *pixelTerm, endpoint string, fr *frames) (x pixelTiming, err error) {
	if err := px.waitBlack(ctx, t, fr); err != nil {
		return x, err
	}
	display := px.cfg.display
	if display == "freerdp" {
		display = pixelsFreeRDP
	}
	display = strings.ReplaceAll(strings.ReplaceAll(display, "{size}", px.size()), "{addr}", endpoint)
	args := strings.Fields(display)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "DISPLAY="+t.disp)
	if px.wakeLib != "" && (filepath.Base(args[0]) == "xfreerdp" || filepath.Base(args[0]) == "wlfreerdp") {
		cmd.Env = append(cmd.Env, "LD_PRELOAD="+px.wakeLib) // as hotdesk-term does
	}
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	setPdeathsig(cmd)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return x, fmt.Errorf("bench: pixels: %s: %w", args[0], err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	first, done, err := watch(ctx, t.scr, fr, t0)
	if err != nil {
		px.shots(t, fr)
		if serr := px.stable(ctx, t, fr); serr != nil { // the next reference
			px.b.log.Warn("pixels: no stable frame after a failed baseline round", "error", serr)
		}
		return x, fmt.Errorf("%w (%s: %s)", err, args[0], stderr.String())
	}
	mapped, ok := t.scr.mappedSince(t0)
	if !ok {
		mapped = t0.Add(first)
	}
	x.mapped, x.first, x.done = mapped.Sub(t0), first, done
	// Let the connection settle before the client is killed, as a person
	// would: weston 10 gives each RDP peer a seat and destroys its global
	// at once on disconnect, and a client still binding it (the desktop
	// shell, an application) dies of "invalid global wl_seat"; a shell
	// dying within 30 s of weston's start ends weston. (Through the
	// attach gateway, rdpSettle in package broker sees to it; this
	// connection bypasses the gateway.)
	if err := px.stable(ctx, t, fr); err != nil {
		return x, err
	}
	return x, nil
}

// tailBuffer keeps the last 2 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 2048; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

// waitScreen evaluates cond (which reads s) at every change of s's screen
// and at least every pixelsFallback until it is true, fails or d passes.
func waitScreen(ctx context.Context, s *xscreen, d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		s.rearm()
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("not within %v", d)
		}
		if err := s.wait(ctx, min(pixelsFallback, left)); err != nil {
			return err
		}
	}
}
