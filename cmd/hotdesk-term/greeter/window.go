//go:build !nogreeter

package greeter

import (
	"errors"
	"image"
	"image/color"
	"strings"
	"sync"
	"time"

	"gioui.org/app"
	"gioui.org/font/gofont"
	"gioui.org/io/key"
	"gioui.org/io/system"
	"gioui.org/layout"
	"gioui.org/op"
	"gioui.org/op/clip"
	"gioui.org/op/paint"
	"gioui.org/text"
	"gioui.org/unit"
	"gioui.org/widget"
	"gioui.org/widget/material"
)

// Window is the greeter on the local display. It is safe for concurrent
// use.
type Window struct {
	opts Options
	w    *app.Window
	th   *material.Theme
	done chan struct{}

	mu      sync.Mutex
	state   State
	ed      widget.Editor
	pairing bool // F2 pressed in Idle: the pairing code entry
	closed  bool
	last    Frame
	err     error // why the display ended the window
}

// New opens the greeter window in state Unavailable ("connecting").
func New(opts Options) (*Window, error) {
	if opts.Submit == nil {
		return nil, errors.New("greeter: no Submit callback")
	}
	if !displayAvailable() {
		return nil, errors.New("greeter: no display ($DISPLAY or $WAYLAND_DISPLAY)")
	}
	g := &Window{
		opts: opts,
		w:    new(app.Window),
		th:   material.NewTheme(),
		done: make(chan struct{}),
		state: State{Screen: Unavailable, Title: "Connecting…",
			Message: "Looking for the server"},
	}
	g.th.Shaper = text.NewShaper(text.WithCollection(gofont.Collection()))
	g.th.Palette = material.Palette{Bg: bg, Fg: fg, ContrastBg: accent, ContrastFg: fg}
	g.ed.SingleLine = true
	g.ed.Submit = true
	mode := app.Fullscreen
	if opts.Windowed {
		mode = app.Windowed
	}
	opt := []app.Option{app.Title("hotdesk"), mode.Option(), app.Decorated(false)}
	if w, h, ok := x11ScreenSize(); ok && !opts.Windowed {
		// Without a window manager, full screen is the screen's size at 0,0.
		opt = append(opt, app.Size(unit.Dp(w), unit.Dp(h)))
	}
	g.w.Option(opt...)
	go g.loop()
	return g, nil
}

var (
	bg     = color.NRGBA{R: 0x1d, G: 0x2b, B: 0x3a, A: 0xff}
	fg     = color.NRGBA{R: 0xf4, G: 0xf6, B: 0xf8, A: 0xff}
	dim    = color.NRGBA{R: 0xa9, G: 0xb7, B: 0xc6, A: 0xff}
	accent = color.NRGBA{R: 0x3c, G: 0x8d, B: 0xde, A: 0xff}
	red    = color.NRGBA{R: 0xff, G: 0x7a, B: 0x6e, A: 0xff}
	field  = color.NRGBA{R: 0x2a, G: 0x3d, B: 0x51, A: 0xff}
)

// Show replaces what the greeter shows.
func (g *Window) Show(s State) {
	g.mu.Lock()
	if s.Screen == Prompt && (g.state.Screen != Prompt || g.state.PromptID != s.PromptID) {
		g.ed.SetText("")
	}
	if s.Screen != Idle {
		g.pairing = false
	}
	g.state = s
	g.mu.Unlock()
	g.w.Invalidate()
}

// Ended is closed when the window is gone: closed by Close, or by the
// display (an X server not up yet, or one that went away: Err says why).
func (g *Window) Ended() <-chan struct{} { return g.done }

// Err is why the window ended, if the display ended it (nil after Close).
func (g *Window) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Last returns what the last frame drew.
func (g *Window) Last() Frame {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last
}

// Close destroys the window and waits (a few seconds at most) for its
// event loop to end.
func (g *Window) Close() {
	g.mu.Lock()
	already := g.closed
	g.closed = true
	g.mu.Unlock()
	if !already {
		g.w.Perform(system.ActionClose)
	}
	// Gio's X11 loop may sit in poll with the close request unflushed;
	// an invalidation wakes it. An X server that never answers is not
	// waited for beyond closeBound.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	bound := time.After(closeBound)
	for {
		select {
		case <-g.done:
			return
		case <-tick.C:
			g.w.Invalidate()
		case <-bound:
			return
		}
	}
}

// closeBound bounds Close.
const closeBound = 5 * time.Second

func (g *Window) loop() {
	defer close(g.done)
	var ops op.Ops
	for {
		switch e := g.w.Event().(type) {
		case app.DestroyEvent:
			g.mu.Lock()
			g.err = e.Err
			g.mu.Unlock()
			return
		case app.FrameEvent:
			gtx := app.NewContext(&ops, e)
			fr, submit, kind := g.layout(gtx)
			e.Frame(gtx.Ops)
			if g.opts.OnFrame != nil {
				g.opts.OnFrame(fr)
			}
			if submit != nil {
				g.opts.Submit(kind, *submit)
			}
		}
	}
}

// layout draws one frame and returns its content and any input submitted.
func (g *Window) layout(gtx layout.Context) (Frame, *string, InputKind) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var submitted *string
	kind := Answer

	// F2 opens the pairing code entry from Idle; Escape closes it, or
	// cancels the wait for the phone (PairWait).
	for {
		ev, ok := gtx.Event(key.Filter{Name: key.NameF2}, key.Filter{Name: key.NameEscape})
		if !ok {
			break
		}
		if ke, ok := ev.(key.Event); ok && ke.State == key.Press {
			switch {
			case ke.Name == key.NameF2 && g.state.Screen == Idle:
				g.pairing = true
				g.ed.SetText("")
			case ke.Name == key.NameEscape && g.state.Screen == PairWait:
				empty := ""
				submitted, kind = &empty, Cancel
			case ke.Name == key.NameEscape:
				g.pairing = false
			}
		}
	}
	s := g.state
	if g.pairing && s.Screen == Idle {
		s = State{Screen: Pairing, Title: "Pair a phone", Label: "Pairing code:",
			Message: "Type the code from your administrator, then hold the phone to the reader. Esc cancels."}
	}
	input := s.Screen == Prompt || s.Screen == Pairing
	g.ed.Mask = 0
	if s.Screen == Prompt && s.Secret {
		g.ed.Mask = '•'
	}
	if input {
		for {
			ev, ok := g.ed.Update(gtx)
			if !ok {
				break
			}
			if sub, ok := ev.(widget.SubmitEvent); ok {
				t := sub.Text
				submitted = &t
				if s.Screen == Pairing {
					kind = PairCode
					g.pairing = false
				}
				g.ed.SetText("")
			}
		}
		gtx.Execute(key.FocusCmd{Tag: &g.ed})
	}

	paint.Fill(gtx.Ops, bg)
	fr := Frame{Screen: s.Screen, Title: s.Title, Message: s.Message, Label: s.Label,
		Width: gtx.Constraints.Max.X, Height: gtx.Constraints.Max.Y}
	switch s.Screen {
	case Idle:
		fr.Hint = "F2: pair a phone"
	case PairWait:
		fr.Hint = "Esc: cancel the pairing"
	}
	if input {
		fr.Input = g.ed.Text()
		if g.ed.Mask != 0 {
			fr.Input = strings.Repeat(string(g.ed.Mask), g.ed.Len())
		}
	}

	layout.Center.Layout(gtx, func(gtx layout.Context) layout.Dimensions {
		gtx.Constraints.Min.X = 0
		gtx.Constraints.Max.X = min(gtx.Constraints.Max.X, gtx.Dp(unit.Dp(720)))
		children := []layout.FlexChild{
			layout.Rigid(func(gtx layout.Context) layout.Dimensions {
				l := material.H3(g.th, s.Title)
				l.Alignment = text.Middle
				return l.Layout(gtx)
			}),
			layout.Rigid(layout.Spacer{Height: unit.Dp(24)}.Layout),
		}
		if s.Message != "" {
			children = append(children, layout.Rigid(func(gtx layout.Context) layout.Dimensions {
				l := material.H6(g.th, s.Message)
				l.Alignment = text.Middle
				l.Color = dim
				if s.Error {
					l.Color = red
				}
				return l.Layout(gtx)
			}), layout.Rigid(layout.Spacer{Height: unit.Dp(24)}.Layout))
		}
		if input {
			children = append(children,
				layout.Rigid(func(gtx layout.Context) layout.Dimensions {
					l := material.H5(g.th, s.Label)
					l.Alignment = text.Middle
					return l.Layout(gtx)
				}),
				layout.Rigid(layout.Spacer{Height: unit.Dp(12)}.Layout),
				layout.Rigid(func(gtx layout.Context) layout.Dimensions {
					return g.field(gtx)
				}))
		}
		if fr.Hint != "" {
			children = append(children, layout.Rigid(func(gtx layout.Context) layout.Dimensions {
				l := material.Body1(g.th, fr.Hint)
				l.Alignment = text.Middle
				l.Color = dim
				return l.Layout(gtx)
			}))
		}
		return layout.Flex{Axis: layout.Vertical, Alignment: layout.Middle}.Layout(gtx, children...)
	})
	g.last = fr
	return fr, submitted, kind
}

// field draws the input box.
func (g *Window) field(gtx layout.Context) layout.Dimensions {
	width := gtx.Dp(unit.Dp(360))
	gtx.Constraints = layout.Exact(image.Pt(width, gtx.Dp(unit.Dp(56))))
	rr := gtx.Dp(unit.Dp(8))
	defer clip.UniformRRect(image.Rectangle{Max: gtx.Constraints.Max}, rr).Push(gtx.Ops).Pop()
	paint.Fill(gtx.Ops, field)
	return layout.UniformInset(unit.Dp(12)).Layout(gtx, func(gtx layout.Context) layout.Dimensions {
		e := material.Editor(g.th, &g.ed, "")
		e.TextSize = unit.Sp(24)
		e.Color = fg
		return e.Layout(gtx)
	})
}
