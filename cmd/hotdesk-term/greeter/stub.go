//go:build nogreeter

package greeter

import "errors"

// Window is absent from a build with the nogreeter tag.
type Window struct{}

// New fails: this build has no greeter (tag nogreeter).
func New(Options) (*Window, error) {
	return nil, errors.New("greeter: not in this build (built with -tags nogreeter)")
}

func (*Window) Show(State)  {}
func (*Window) Last() Frame { return Frame{} }
func (*Window) Close()      {}

// Ended never closes: there is no window.
func (*Window) Ended() <-chan struct{} { return nil }

// Err is nil: there is no window.
func (*Window) Err() error { return nil }
