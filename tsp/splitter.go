package tsp

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrTooLarge is returned by Splitter when a pending message exceeds its
// limit; the stream cannot be resynchronised and must be closed.
var ErrTooLarge = errors.New("tsp: message too large")

// Splitter cuts a TCP or TLS byte stream, in either direction, into TSP
// messages: a text line through '\n', or a "Content-length: N" line plus N
// body bytes. Leading NULs stay in front of the message they precede: they
// are usually the C string terminator gogoc sends after AUTHENTICATE, but a
// SASL PLAIN message starts with NUL, and only Server can tell the two apart.
// Create one with NewSplitter; not safe for concurrent use.
type Splitter struct {
	buf []byte
	max int
}

// NewSplitter returns a Splitter that refuses messages longer than max
// bytes (MaxStreamMessage when max <= 0).
func NewSplitter(max int) *Splitter {
	if max <= 0 {
		max = MaxStreamMessage
	}
	return &Splitter{max: max}
}

// Write appends stream bytes. It never fails; limits are enforced by Next.
func (s *Splitter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	return len(p), nil
}

// Rest returns the bytes not yet returned as messages and empties the
// Splitter: the caller takes over the stream (v4tlsv6 data mode).
func (s *Splitter) Rest() []byte {
	rest := s.buf
	s.buf = nil
	return rest
}

// Buffered returns the number of bytes not yet returned as messages.
func (s *Splitter) Buffered() int { return len(s.buf) }

// Next returns a copy of the next complete message, or ok=false when more
// bytes are needed. An error means the stream is unusable.
func (s *Splitter) Next() (msg []byte, ok bool, err error) {
	n, err := s.frameLen()
	if err != nil || n == 0 {
		return nil, false, err
	}
	msg = bytes.Clone(s.buf[:n])
	s.buf = append(s.buf[:0], s.buf[n:]...)
	return msg, true, nil
}

// frameLen returns the length of the first complete message in buf, or 0.
func (s *Splitter) frameLen() (int, error) {
	nuls := len(s.buf) - len(trimNULs(s.buf))
	nl := bytes.IndexByte(s.buf[nuls:], '\n')
	if nl < 0 {
		if len(s.buf) > s.max {
			return 0, fmt.Errorf("%w: line longer than %d bytes", ErrTooLarge, s.max)
		}
		return 0, nil
	}
	lineEnd := nuls + nl + 1
	if lineEnd > s.max {
		return 0, fmt.Errorf("%w: line longer than %d bytes", ErrTooLarge, s.max)
	}
	if !isContentHeader(s.buf[nuls:]) {
		return lineEnd, nil
	}
	n, hdr, err := parseContentHeader(s.buf[nuls:lineEnd])
	if err != nil {
		return 0, err
	}
	total := nuls + hdr + n
	if total > s.max {
		return 0, fmt.Errorf("%w: message of %d bytes exceeds %d", ErrTooLarge, total, s.max)
	}
	if len(s.buf) < total {
		return 0, nil
	}
	return total, nil
}
