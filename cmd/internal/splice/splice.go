// Package splice joins two byte streams, as the commands' relays and
// proxies do: what one side sends the other receives, both ways, until
// either side ends.
package splice

import "io"

// Conns copies a to b and b to a until either copy ends (end of stream or
// an error), then closes both, so that the other copy ends too, and
// returns once both copies have returned. It buffers nothing beyond
// io.Copy's buffer: a slow reader pushes back on the writer.
func Conns(a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, a); done <- struct{}{} }()
	go func() { _, _ = io.Copy(a, b); done <- struct{}{} }()
	<-done
	a.Close()
	b.Close()
	<-done
}
