// Package greeter is the thin client's full-screen window shown while no
// desktop is attached: "insert your card or tap your badge", PAM prompts
// (echo-off input masked with bullets), messages (wrong PIN, locked out,
// session moved, broker unavailable) and the pairing code entry.
//
// Contract: the terminal agent drives it through Show with a State, the
// whole content of the screen; the greeter never talks to a broker. What
// the person types is handed to the Submit callback (once per Enter, with
// the kind of input), from the window's goroutine. The last laid-out frame
// is reported to OnFrame as a Frame (the widget state: texts drawn, input
// as shown, i.e. masked), which tests and the -json event stream use.
// Close destroys the window and waits for its goroutine. The package uses
// Gio (gioui.org) on X11 or Wayland; New fails when neither is reachable.
// Keyboard only: F2 opens the pairing code entry, Escape closes it;
// Escape on PairWait submits Cancel.
package greeter

// Screen is what the greeter shows.
type Screen string

const (
	// Idle waits for a card: "insert your card or tap your badge".
	Idle Screen = "idle"
	// Prompt asks for a PIN, password or user name.
	Prompt Screen = "prompt"
	// Busy says something is happening (card read, desktop starting).
	Busy Screen = "busy"
	// Unavailable says no broker answers and the terminal is reconnecting.
	Unavailable Screen = "unavailable"
	// Pairing asks for a pairing code (entered with F2 from Idle).
	Pairing Screen = "pairing"
	// PairWait waits for the phone to pair, the code entered: Escape
	// cancels it (Submit gets Cancel). No input field.
	PairWait Screen = "pair_wait"
)

// State is the whole content of the greeter.
type State struct {
	Screen Screen
	// Title is the large line; Message the line below it (an error or
	// information, e.g. "Wrong PIN" or "Your session moved to desk 4").
	Title   string
	Message string
	// Error marks Message as an error (drawn in red).
	Error bool
	// Label is the prompt's text ("PIN:", "Password:") with Screen Prompt.
	Label string
	// Secret masks the input (echo off).
	Secret bool
	// PromptID tells prompts apart: a new one clears the input.
	PromptID uint32
}

// InputKind says what typed input answers.
type InputKind string

const (
	// Answer answers the current prompt.
	Answer InputKind = "answer"
	// PairCode is a pairing code.
	PairCode InputKind = "pair"
	// Cancel is Escape pressed on PairWait (the text is empty).
	Cancel InputKind = "cancel"
)

// Frame is what the last frame drew: the widget state.
type Frame struct {
	Screen  Screen
	Title   string
	Message string
	Label   string
	// Input is the input field as drawn: bullets for a secret.
	Input string
	// Hint is the key hint drawn at the bottom: "F2: pair a phone" on
	// Idle, "Esc: cancel the pairing" on PairWait.
	Hint string
	// Width and Height are the window size in pixels.
	Width, Height int
}

// Options configure a greeter.
type Options struct {
	// Submit receives typed input when Enter is pressed. Required.
	Submit func(kind InputKind, text string)
	// OnFrame, if set, sees every frame's content.
	OnFrame func(Frame)
	// Windowed opens a normal window instead of a full-screen one (for
	// development).
	Windowed bool
}
