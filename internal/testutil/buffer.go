package testutil

import (
	"bytes"
	"sync"
)

// LockedBuffer is a bytes.Buffer that many goroutines may write and read at
// once: a test's log output (an hclog.Logger's or a log.Logger's Output)
// while the code under test runs. The zero value is ready to use.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what has been written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
