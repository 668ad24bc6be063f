package tsp

import (
	"errors"
	"fmt"
	"strconv"
)

// TSP status codes (tsp-wire-notes §3.12). Codes above 1000 are redirects.
const (
	StatusSuccess               = 200
	StatusAuthenticationFailed  = 300
	StatusNoMoreTunnels         = 301
	StatusUnsupportedVersion    = 302
	StatusUnsupportedTunnelType = 303
	StatusServerError           = 310
	StatusInvalidRequest        = 500
	StatusInvalidIPv4           = 501
	StatusInvalidIPv6           = 502
	StatusPrefixInUse           = 506
	StatusPrefixLenUnavailable  = 507
	StatusDNSDelegationError    = 509
	StatusUnsupportedPrefixLen  = 518
	StatusMissingPrefixLen      = 520
	StatusRequestInProgress     = 521
	StatusPrefixForAnonymous    = 522
	StatusServerTooBusy         = 530
	StatusRedirect              = 1200
	maxStatusCode               = 9999
	statusLineReasonLimit       = 200
)

// statusCodes lists every code the server may send, in table order.
func statusCodes() []int {
	return []int{
		StatusSuccess, StatusAuthenticationFailed, StatusNoMoreTunnels, StatusUnsupportedVersion,
		StatusUnsupportedTunnelType, StatusServerError, StatusInvalidRequest, StatusInvalidIPv4,
		StatusInvalidIPv6, StatusPrefixInUse, StatusPrefixLenUnavailable, StatusDNSDelegationError,
		StatusUnsupportedPrefixLen, StatusMissingPrefixLen, StatusRequestInProgress,
		StatusPrefixForAnonymous, StatusServerTooBusy, StatusRedirect,
	}
}

// Reason returns the fixed phrase of code, or false for codes never sent.
// Only these phrases reach a client, never internal error text.
func Reason(code int) (string, bool) {
	switch code {
	case StatusSuccess:
		return "Success", true
	case StatusAuthenticationFailed:
		return "Authentication failed", true
	case StatusNoMoreTunnels:
		return "No more tunnels available", true
	case StatusUnsupportedVersion:
		return "Unsupported client version", true
	case StatusUnsupportedTunnelType:
		return "Unsupported tunnel type", true
	case StatusServerError:
		return "Server side error", true
	case StatusInvalidRequest:
		return "Invalid request", true
	case StatusInvalidIPv4:
		return "Invalid IPv4 address", true
	case StatusInvalidIPv6:
		return "Invalid IPv6 address", true
	case StatusPrefixInUse:
		return "IPv4 prefix already in use", true
	case StatusPrefixLenUnavailable:
		return "Prefix length unavailable", true
	case StatusDNSDelegationError:
		return "DNS delegation error", true
	case StatusUnsupportedPrefixLen:
		return "Unsupported prefix length", true
	case StatusMissingPrefixLen:
		return "Missing prefix length", true
	case StatusRequestInProgress:
		return "Request already in progress", true
	case StatusPrefixForAnonymous:
		return "Prefix requested for anonymous", true
	case StatusServerTooBusy:
		return "Server too busy", true
	case StatusRedirect:
		return "Redirection", true
	}
	return "", false
}

// StatusError carries a TSP status code and the internal cause. Only Code
// (with its fixed phrase) is sent to the peer; Err is for logs.
type StatusError struct {
	Code int
	Err  error
}

// Error implements error.
func (e *StatusError) Error() string {
	r, _ := Reason(e.Code)
	if e.Err == nil {
		return fmt.Sprintf("tsp status %d %s", e.Code, r)
	}
	return fmt.Sprintf("tsp status %d %s: %v", e.Code, r, e.Err)
}

// Unwrap returns the cause.
func (e *StatusError) Unwrap() error { return e.Err }

// wireStatus is the code sent for err: a *StatusError's known non-success
// code, else 310.
func wireStatus(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		if _, ok := Reason(se.Code); ok && se.Code != StatusSuccess {
			return se.Code
		}
	}
	return StatusServerError
}

// Status is a status line: "<code> <reason>\r\n".
type Status struct {
	Code   int
	Reason string
}

// NewStatus returns the status line for code with its fixed phrase.
func NewStatus(code int) Status {
	r, ok := Reason(code)
	if !ok {
		code = StatusServerError
		r, _ = Reason(code)
	}
	return Status{Code: code, Reason: r}
}

// Marshal encodes "<code> <reason>\r\n".
func (s Status) Marshal() []byte { return s.Append(nil) }

// Append appends the status line to dst.
func (s Status) Append(dst []byte) []byte {
	b := strconv.AppendInt(dst, int64(s.Code), 10)
	b = append(b, ' ')
	b = append(b, s.Reason...)
	return append(b, crlf...)
}

// ParseStatus parses one status line (CRLF, LF or, in a datagram, no
// terminator): a 3 or 4 digit code, then a space and a printable reason or
// the line end. rest is what follows the line.
func ParseStatus(b []byte) (s Status, rest []byte, err error) {
	line, rest, err := firstLine(trimNULs(b))
	if err != nil {
		return Status{}, nil, err
	}
	n := 0
	for n < len(line) && n < 5 && isDigit(line[n]) {
		n++
	}
	if n < 3 || n > 4 || line[0] == '0' {
		return Status{}, nil, fmt.Errorf("%w: status code must be 100-9999", ErrMalformed)
	}
	code, _ := strconv.Atoi(string(line[:n]))
	reason := ""
	if n < len(line) {
		if line[n] != ' ' {
			return Status{}, nil, fmt.Errorf("%w: status code not followed by a space", ErrMalformed)
		}
		reason = string(line[n+1:])
	}
	if len(reason) > statusLineReasonLimit || !printable(reason) {
		return Status{}, nil, fmt.Errorf("%w: bad status reason", ErrMalformed)
	}
	return Status{Code: code, Reason: reason}, rest, nil
}
