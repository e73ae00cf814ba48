// Package countio counts the bytes that pass through a reader: how much of
// a stream a decoder took, or whether it took anything at all.
package countio

import "io"

// Reader reads from R and counts in N the bytes it handed out. Like
// io.LimitedReader, it is used through its fields and is not safe for
// concurrent use.
type Reader struct {
	R io.Reader
	N int64 // bytes read through the Reader so far
}

// Read reads from R, adding what it got to N.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.R.Read(p)
	r.N += int64(n)
	return n, err
}
