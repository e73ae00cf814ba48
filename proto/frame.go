package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxFrame is the largest payload a frame may carry, in bytes. A length
// header above it is refused before any of the payload is read or allocated.
const MaxFrame = 64 << 10

// headerLen is the size of the big-endian length prefix.
const headerLen = 4

var (
	// ErrFrameTooLarge reports a frame whose length header exceeds MaxFrame
	// (or a message that would encode to more than MaxFrame bytes).
	ErrFrameTooLarge = errors.New("proto: frame too large")
	// ErrMalformed reports a frame that cannot be a valid message: empty or
	// truncated frame, invalid or non-conforming CBOR, duplicate map keys,
	// excessive nesting, indefinite lengths, tags, trailing bytes, or a body
	// that does not match its type.
	ErrMalformed = errors.New("proto: malformed frame")
)

// ReadFrame reads one frame from r and returns its payload, freshly
// allocated for this frame. It returns io.EOF (unwrapped) if r ends cleanly
// before the first header byte, an error wrapping ErrFrameTooLarge if the
// header announces more than MaxFrame bytes (the payload is then neither read
// nor allocated), an error wrapping ErrMalformed (and io.ErrUnexpectedEOF) if
// the stream ends inside the frame or the length is 0, and any other read
// error (e.g. a timeout) wrapped.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [headerLen]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		switch {
		case n == 0 && errors.Is(err, io.EOF):
			return nil, io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fmt.Errorf("%w: truncated header (%d of %d bytes): %w", ErrMalformed, n, headerLen, err)
		}
		return nil, fmt.Errorf("proto: read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	case n > MaxFrame:
		return nil, fmt.Errorf("%w: %d bytes announced, limit %d", ErrFrameTooLarge, n, MaxFrame)
	}
	payload := make([]byte, n)
	if got, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: truncated frame (%d of %d bytes): %w", ErrMalformed, got, n, io.ErrUnexpectedEOF)
		}
		return nil, fmt.Errorf("proto: read frame: %w", err)
	}
	return payload, nil
}

// AppendFrame appends the frame carrying payload (header and payload) to dst.
// It fails with ErrFrameTooLarge or ErrMalformed (empty payload) rather than
// produce a frame the peer must refuse.
func AppendFrame(dst, payload []byte) ([]byte, error) {
	switch {
	case len(payload) == 0:
		return dst, fmt.Errorf("%w: empty frame", ErrMalformed)
	case len(payload) > MaxFrame:
		return dst, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(payload), MaxFrame)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...), nil
}

// WriteFrame writes payload as one frame with a single Write call.
func WriteFrame(w io.Writer, payload []byte) error {
	buf, err := AppendFrame(make([]byte, 0, headerLen+len(payload)), payload)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("proto: write frame: %w", err)
	}
	return nil
}
