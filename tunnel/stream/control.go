package stream

import (
	"encoding/binary"
	"fmt"
	"net"
)

// Control frames carry TSP messages on the packets' stream, so that a v4tlsv6 client can
// renew its lease on its one connection (docs/decisions/0002). A control frame's first
// payload byte is ControlMarker (an IPv4 packet starts with 0x4_); the rest is one TSP
// message.
const (
	ControlMarker = 0x00
	// MaxControlLen bounds a control message (a TSP message over TCP is at most 8 KiB).
	MaxControlLen = 8 << 10
)

func isControl(b []byte) bool { return len(b) > HeaderLen && b[HeaderLen] == ControlMarker }

// parseControl parses a control frame at the start of b (isControl(b) must hold). It returns
// the message, the bytes consumed, or errNeedMore.
func parseControl(b []byte) ([]byte, int, error) {
	n := int(binary.BigEndian.Uint16(b))
	if n < 2 || n-1 > MaxControlLen {
		return nil, 0, fmt.Errorf("%w: control frame of %d bytes", ErrFrameTooLarge, n)
	}
	if len(b) < HeaderLen+n {
		return nil, 0, errNeedMore
	}
	return b[HeaderLen+1 : HeaderLen+n], HeaderLen + n, nil
}

// AppendControl appends msg as one control frame to dst.
func AppendControl(dst, msg []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(msg)+1))
	dst = append(dst, ControlMarker)
	return append(dst, msg...)
}

// WriteControl queues one TSP message as a control frame. Control frames are never dropped
// for a full queue: they are small and rare (one renewal per lease lifetime).
func (l *Link) WriteControl(msg []byte) error {
	if len(msg) == 0 || len(msg) > MaxControlLen {
		return fmt.Errorf("stream: control message of %d bytes", len(msg))
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.pending = AppendControl(l.pending, msg)
	l.kickLocked()
	l.mu.Unlock()
	return nil
}
