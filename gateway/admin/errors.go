package admin

import (
	"errors"
	"fmt"
	"syscall"
)

// Error classes. A Backend wraps them to choose the HTTP status; the client
// returns an [*Error] that matches the same class with errors.Is.
var (
	ErrNotFound    = errors.New("not found")           // 404: no such session, identity or serial
	ErrInvalid     = errors.New("invalid request")     // 400: the request itself is wrong
	ErrUnavailable = errors.New("unavailable")         // 503: feature disabled or gateway shutting down
	ErrInternal    = errors.New("internal error")      // 500: anything else
	ErrNotRunning  = errors.New("gateway not running") // client: nothing listens on the socket
	ErrPermission  = errors.New("permission denied")   // client: socket not accessible to this user
	ErrInUse       = errors.New("admin socket in use") // server: another gateway owns the socket
)

// Error codes in the JSON error body.
const (
	codeNotFound    = "not_found"
	codeInvalid     = "invalid"
	codeUnavailable = "unavailable"
	codeInternal    = "internal"
)

// Error is an error answered by the gateway. Message is the server's text,
// meant for the operator.
type Error struct {
	Status  int    // HTTP status
	Code    string // not_found, invalid, unavailable, internal
	Message string
}

// Error returns the server's message.
func (e *Error) Error() string { return e.Message }

// Is matches the error class of e: ErrNotFound, ErrInvalid, ErrUnavailable
// or ErrInternal.
func (e *Error) Is(target error) bool {
	return target == classOf(e.Code)
}

func classOf(code string) error {
	switch code {
	case codeNotFound:
		return ErrNotFound
	case codeInvalid:
		return ErrInvalid
	case codeUnavailable:
		return ErrUnavailable
	default:
		return ErrInternal
	}
}

// DialError reports that the admin socket could not be reached. It matches
// ErrNotRunning (no socket, or nothing listening) or ErrPermission.
type DialError struct {
	Path string
	Err  error
}

// Error names the socket and suggests the likely cause.
func (e *DialError) Error() string {
	if errors.Is(e.Err, syscall.EACCES) || errors.Is(e.Err, syscall.EPERM) {
		return fmt.Sprintf("permission denied on admin socket %s (run as root or as the gateway's user): %v", e.Path, e.Err)
	}
	return fmt.Sprintf("is dstm-gateway running? socket %s: %v", e.Path, e.Err)
}

// Unwrap returns the dial error.
func (e *DialError) Unwrap() error { return e.Err }

// Is matches ErrPermission for EACCES/EPERM and ErrNotRunning otherwise.
func (e *DialError) Is(target error) bool {
	perm := errors.Is(e.Err, syscall.EACCES) || errors.Is(e.Err, syscall.EPERM)
	return (target == ErrPermission && perm) || (target == ErrNotRunning && !perm)
}

// Exit codes for the CLI, chosen by [ExitCode].
const (
	ExitOK          = 0 // success
	ExitFailure     = 1 // any other error (internal error, I/O, bad response)
	ExitUsage       = 2 // invalid request (bad identity, TTL…); also used by the CLI for bad flags
	ExitNotRunning  = 3 // the gateway is not running or its socket is not reachable
	ExitPermission  = 4 // the socket exists but this user may not use it
	ExitNotFound    = 5 // session, identity or serial not found
	ExitUnavailable = 6 // the gateway refused: feature disabled or shutting down
)

// ExitCode maps an error returned by [Client] to the CLI's exit status.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrPermission):
		return ExitPermission
	case errors.Is(err, ErrNotRunning):
		return ExitNotRunning
	case errors.Is(err, ErrNotFound):
		return ExitNotFound
	case errors.Is(err, ErrInvalid):
		return ExitUsage
	case errors.Is(err, ErrUnavailable):
		return ExitUnavailable
	default:
		return ExitFailure
	}
}
