// Package proto is the terminal↔broker wire protocol of hotdesk: TLS 1.3
// (ALPN "hotdesk/1") over TCP, carrying length-prefixed CBOR frames. The
// normative description is PROTOCOL.md in this folder; this comment states
// the Go contract.
//
// A frame is a 4-byte big-endian length N (1 ≤ N ≤ MaxFrame) followed by N
// bytes of payload. The payload is the CBOR map {1: type, 2: body}, where body
// is the CBOR map of the message struct for type (messages.go). Encode
// produces core-deterministic CBOR; Decode is strict and meant for untrusted
// input: every malformed payload yields an error wrapping ErrMalformed,
// ErrFrameTooLarge or ErrUnknownType, and no partial result.
//
// Conn carries messages over a net.Conn (normally a *tls.Conn). Send may be
// called from several goroutines; Recv must be called from one goroutine
// only. A Conn does not close itself on error: the owner decides, usually
// after sending the peer ErrorFor(err).
//
// ErrorCode values are errors themselves, so failures that map to a protocol
// error code wrap the code and can be tested with errors.Is(err, ErrBadVersion).
// An Error message received from the peer surfaces as *ProtocolError.
//
// The package has no cgo dependency and no global state besides its
// immutable codec tables.
package proto
