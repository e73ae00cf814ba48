package registry

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// OutcomeUnknown reports whether err, returned by a call of this package
// that writes, leaves it unknown whether etcd applied the write: the
// request may have been committed although the client saw a deadline, a
// cancellation, a lost connection, a leader change or a server-side
// timeout. Resolve such an outcome by reading back before acting on it
// (Claim does so itself; see also RedeemPairing).
//
// It is false for nil and for the refusals that say nothing was written:
// this package's ErrNotFound, ErrExists, ErrInvalidKey, ErrCorrupt and
// ErrTooLarge, and etcd's errors that refuse a request before it is
// applied (gRPC codes InvalidArgument, FailedPrecondition, OutOfRange,
// NotFound, AlreadyExists, PermissionDenied, Unauthenticated,
// Unimplemented: a malformed or oversized request, a lease not found,
// permission denied). Anything else counts as unknown, so that an error
// this function does not know costs a read, never a wrong answer.
func OutcomeUnknown(err error) bool {
	if err == nil {
		return false
	}
	for _, refused := range []error{ErrNotFound, ErrExists, ErrInvalidKey, ErrCorrupt, ErrTooLarge} {
		if errors.Is(err, refused) {
			return false
		}
	}
	// The client returns etcd's known errors as rpctypes.EtcdError (a
	// Code method, no gRPC status), others as gRPC status errors.
	code := codes.Unknown
	var coded interface{ Code() codes.Code }
	if errors.As(err, &coded) {
		code = coded.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.NotFound,
		codes.AlreadyExists, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented:
		return false
	}
	return true
}
