package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame layout constants.
const (
	HeaderLen    = 2     // big-endian length prefix
	MaxFrameLen  = 65535 // largest length the prefix can carry
	MinPacketLen = 20    // an IPv4 header without options
)

// Errors returned by ParseFrame. Every one of them is fatal for the stream.
var (
	ErrFrameTooShort = errors.New("stream: frame shorter than an IPv4 header")
	ErrFrameTooLarge = errors.New("stream: frame longer than the MTU allows")
	ErrNotIPv4       = errors.New("stream: frame is not an IPv4 packet")
)

var errNeedMore = errors.New("stream: incomplete frame")

// ParseFrame parses the first frame in b and returns its packet (nil for a
// keepalive, else aliasing b) and length, or consumed 0 when the frame is
// incomplete.
func ParseFrame(b []byte, maxPacket int) (pkt []byte, consumed int, err error) {
	pkt, consumed, err = parseFrame(b, maxPacket)
	if errors.Is(err, errNeedMore) {
		return nil, 0, nil
	}
	return pkt, consumed, err
}

func parseFrame(b []byte, maxPacket int) ([]byte, int, error) {
	if len(b) < HeaderLen {
		return nil, 0, errNeedMore
	}
	n := int(binary.BigEndian.Uint16(b))
	switch {
	case n == 0:
		return nil, HeaderLen, nil
	case n < MinPacketLen:
		return nil, 0, fmt.Errorf("%w: %d bytes", ErrFrameTooShort, n)
	case n > maxPacket:
		return nil, 0, fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, n, maxPacket)
	}
	// The version nibble is in the first payload byte; check it as soon as
	// it is there so that garbage is refused before a whole frame arrives.
	if len(b) > HeaderLen && b[HeaderLen]>>4 != 4 {
		return nil, 0, fmt.Errorf("%w: version %d", ErrNotIPv4, b[HeaderLen]>>4)
	}
	if len(b) < HeaderLen+n {
		return nil, 0, errNeedMore
	}
	return b[HeaderLen : HeaderLen+n], HeaderLen + n, nil
}

// AppendFrame appends pkt as one frame to dst. pkt must be at most
// MaxFrameLen bytes; an empty pkt appends a keepalive frame.
func AppendFrame(dst, pkt []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(pkt)))
	return append(dst, pkt...)
}
