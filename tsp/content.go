package tsp

import (
	"fmt"
	"strconv"
)

const contentLengthKey = "Content-length:"

// maxContentLength bounds the N of a Content-length header.
const maxContentLength = MaxStreamMessage

// MarshalContent frames body as "Content-length: N\r\n" + body, where N is
// exactly len(body) (gogoc rejects a mismatch).
func MarshalContent(body []byte) []byte {
	b := make([]byte, 0, len(contentLengthKey)+8+len(body))
	b = append(b, contentLengthKey...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, crlf...)
	return append(b, body...)
}

// ParseContent returns the body of a Content-length framed message; exactly
// N bytes must follow the header line (key in any case, CRLF or LF).
func ParseContent(b []byte) ([]byte, error) {
	n, hdrLen, err := parseContentHeader(trimNULs(b))
	if err != nil {
		return nil, err
	}
	body := trimNULs(b)[hdrLen:]
	if len(body) != n {
		return nil, fmt.Errorf("%w: Content-length %d but %d body bytes", ErrMalformed, n, len(body))
	}
	return body, nil
}

// isContentHeader reports whether b (leading NULs removed) starts a
// Content-length framed message.
func isContentHeader(b []byte) bool { return hasPrefixFold(b, contentLengthKey) }

// parseContentHeader parses "Content-length: N" and the line end at the
// start of b, returning N and the header's length.
func parseContentHeader(b []byte) (n, hdrLen int, err error) {
	if !isContentHeader(b) {
		return 0, 0, fmt.Errorf("%w: missing Content-length", ErrMalformed)
	}
	i := len(contentLengthKey)
	for i < len(b) && b[i] == ' ' {
		i++
	}
	start := i
	for i < len(b) && isDigit(b[i]) && i-start < 6 {
		i++
	}
	if i == start {
		return 0, 0, fmt.Errorf("%w: Content-length without a number", ErrMalformed)
	}
	n, _ = strconv.Atoi(string(b[start:i]))
	for i < len(b) && b[i] == ' ' {
		i++
	}
	switch {
	case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
		i += 2
	case i < len(b) && b[i] == '\n':
		i++
	default:
		return 0, 0, fmt.Errorf("%w: bad Content-length line", ErrMalformed)
	}
	if n > maxContentLength {
		return 0, 0, fmt.Errorf("%w: Content-length %d exceeds %d", ErrMalformed, n, maxContentLength)
	}
	return n, i, nil
}
