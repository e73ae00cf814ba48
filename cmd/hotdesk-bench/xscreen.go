package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/damage"
	"github.com/jezek/xgb/shm"
	"github.com/jezek/xgb/xproto"
	"golang.org/x/sys/unix"
)

// xscreen reads an X server's screen directly: one X connection, the root
// window's pixels through MIT-SHM (a shared memory segment the server
// copies into; plain GetImage if the extension is missing), the times at
// which top-level windows were mapped (SubstructureNotify on the root), and
// a signal whenever the screen changed (DAMAGE on the root, which covers
// every window on it), so that a reader grabs the screen when something
// was drawn rather than every few milliseconds: reading 3 MB from the X
// server hundreds of times a second would take CPU from the very clients
// being timed. No process is started per read.
type xscreen struct {
	conn *xgb.Conn
	root xproto.Window
	w, h int

	// MIT-SHM segment, or nil shmBuf for plain GetImage.
	shmID  int
	seg    shm.Seg
	shmBuf []byte

	// DAMAGE: dmg reports the first change after each rearm on changed
	// (capacity 1); hasDamage is false if the server lacks the extension.
	dmg       damage.Damage
	hasDamage bool
	changed   chan struct{}
	lastGrab  time.Time // when grab last read the screen (one reader)

	mu   sync.Mutex
	maps []time.Time // MapNotify arrivals, oldest first (bounded)
	done chan struct{}
}

// maxMapTimes bounds the remembered MapNotify times.
const maxMapTimes = 64

func init() {
	// xgb logs to stderr on its own (e.g. "no ~/.Xauthority, trying
	// without"); errors reach the bench through return values.
	xgb.Logger = log.New(io.Discard, "", 0)
}

// openXScreen connects to display (":N").
func openXScreen(display string) (*xscreen, error) {
	c, err := xgb.NewConnDisplay(display)
	if err != nil {
		return nil, fmt.Errorf("bench: x display %s: %w", display, err)
	}
	scr := xproto.Setup(c).DefaultScreen(c)
	s := &xscreen{conn: c, root: scr.Root, w: int(scr.WidthInPixels), h: int(scr.HeightInPixels), shmID: -1,
		changed: make(chan struct{}, 1), done: make(chan struct{})}
	if scr.RootDepth != 24 {
		c.Close()
		return nil, fmt.Errorf("bench: x display %s: depth %d; want 24", display, scr.RootDepth)
	}
	if err := xproto.ChangeWindowAttributesChecked(c, s.root, xproto.CwEventMask,
		[]uint32{xproto.EventMaskSubstructureNotify}).Check(); err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: x display %s: select events: %w", display, err)
	}
	go s.events()
	if err := s.initShm(); err != nil {
		s.shmBuf = nil // plain GetImage
	}
	s.hasDamage = s.initDamage() == nil
	return s, nil
}

// initDamage asks for a DamageNotify on the first change to the root
// window (or any window on it) after each rearm.
func (s *xscreen) initDamage() error {
	if err := damage.Init(s.conn); err != nil {
		return err
	}
	if _, err := damage.QueryVersion(s.conn, 1, 1).Reply(); err != nil {
		return err
	}
	id, err := damage.NewDamageId(s.conn)
	if err != nil {
		return err
	}
	if err := damage.CreateChecked(s.conn, id, xproto.Drawable(s.root), damage.ReportLevelNonEmpty).Check(); err != nil {
		return err
	}
	s.dmg = id
	return nil
}

// rearm forgets the changes so far: the next change signals changed
// again. Call it before a grab, so that a change the grab misses is
// signalled.
func (s *xscreen) rearm() {
	if s.hasDamage {
		damage.Subtract(s.conn, s.dmg, 0, 0)
	}
}

// wait returns when the screen may have changed since the last rearm: at
// a DamageNotify, or after fallback (every fallback without DAMAGE). It
// returns no sooner than pixelsPoll after the last grab: a client drawing
// a frame in many requests would otherwise have the screen read after
// each of them, and the X server (one thread) would spend its time
// copying the screen for the reader instead of drawing for the client.
func (s *xscreen) wait(ctx context.Context, fallback time.Duration) error {
	if !s.hasDamage {
		fallback = pixelsPoll
	}
	t := time.NewTimer(fallback)
	defer t.Stop()
	select {
	case <-s.changed:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	if d := pixelsPoll - time.Since(s.lastGrab); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *xscreen) initShm() error {
	if err := shm.Init(s.conn); err != nil {
		return err
	}
	size := s.w * s.h * 4
	id, err := unix.SysvShmGet(unix.IPC_PRIVATE, size, unix.IPC_CREAT|0o600)
	if err != nil {
		return err
	}
	buf, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		_, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		return err
	}
	seg, err := shm.NewSegId(s.conn)
	if err == nil {
		err = shm.AttachChecked(s.conn, seg, uint32(id), false).Check()
	}
	// Marked for removal now: it goes when both sides have detached.
	_, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	if err != nil {
		_ = unix.SysvShmDetach(buf)
		return err
	}
	s.shmID, s.seg, s.shmBuf = id, seg, buf
	return nil
}

// events records MapNotify times until the connection closes.
func (s *xscreen) events() {
	defer close(s.done)
	for {
		ev, err := s.conn.WaitForEvent()
		if ev == nil && err == nil {
			return
		}
		if _, ok := ev.(damage.NotifyEvent); ok {
			select {
			case s.changed <- struct{}{}:
			default:
			}
			continue
		}
		if _, ok := ev.(xproto.MapNotifyEvent); ok {
			now := time.Now()
			s.mu.Lock()
			if len(s.maps) == maxMapTimes {
				s.maps = s.maps[1:]
			}
			s.maps = append(s.maps, now)
			s.mu.Unlock()
		}
	}
}

// mappedSince returns the first time a window was mapped at or after t.
func (s *xscreen) mappedSince(t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.maps {
		if !m.Before(t) {
			return m, true
		}
	}
	return time.Time{}, false
}

// grab reads the whole screen (4 bytes a pixel, BGRX) into dst, which
// must hold w*h*4 bytes.
func (s *xscreen) grab(dst []byte) error {
	if len(dst) < s.w*s.h*4 {
		return errors.New("bench: grab: buffer too small")
	}
	defer func() { s.lastGrab = time.Now() }()
	if s.shmBuf != nil {
		if _, err := shm.GetImage(s.conn, xproto.Drawable(s.root), 0, 0, uint16(s.w), uint16(s.h),
			0xffffffff, xproto.ImageFormatZPixmap, s.seg, 0).Reply(); err != nil {
			return fmt.Errorf("bench: grab: %w", err)
		}
		copy(dst, s.shmBuf)
		return nil
	}
	// Plain GetImage replies are bounded by the request length (BIG-REQUESTS
	// is not needed for replies): read in bands of rows.
	const band = 64
	for y := 0; y < s.h; y += band {
		rows := min(band, s.h-y)
		r, err := xproto.GetImage(s.conn, xproto.ImageFormatZPixmap, xproto.Drawable(s.root),
			0, int16(y), uint16(s.w), uint16(rows), 0xffffffff).Reply()
		if err != nil {
			return fmt.Errorf("bench: grab: %w", err)
		}
		copy(dst[y*s.w*4:], r.Data)
	}
	return nil
}

// frameBytes is the size of one grab.
func (s *xscreen) frameBytes() int { return s.w * s.h * 4 }

// close releases the segment and the connection.
func (s *xscreen) close() {
	if s.shmBuf != nil {
		_ = shm.DetachChecked(s.conn, s.seg).Check()
		_ = unix.SysvShmDetach(s.shmBuf)
		s.shmBuf = nil
	}
	s.conn.Close()
	<-s.done
}

// frameDiff compares two frames of w×h BGRX pixels, sampling every step-th
// pixel of every step-th row: it returns the fraction of samples whose
// colour differs by more than tol in any channel.
func frameDiff(a, b []byte, w, h, step, tol int) float64 {
	var n, total int
	for y := 0; y < h; y += step {
		row := y * w * 4
		for x := 0; x < w; x += step {
			i := row + x*4
			total++
			if absDiff(a[i], b[i]) > tol || absDiff(a[i+1], b[i+1]) > tol || absDiff(a[i+2], b[i+2]) > tol {
				n++
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(n) / float64(total)
}

func absDiff(a, b byte) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}
