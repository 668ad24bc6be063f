package tsp

import (
	"encoding/binary"
	"fmt"
)

// HeaderLen is the size of the UDP ("reliable UDP") header.
const HeaderLen = 8

// Header is the 8-byte header of every TSP UDP datagram: the signature
// nibble 0xF, a 28-bit sequence and a 32-bit timestamp, in network order.
// The server echoes the client's header unchanged in its reply.
type Header struct {
	Seq       uint32 // 28 bits; gogoc starts at 0xF0
	Timestamp uint32 // the client's millisecond clock, echoed for its RTT
}

const (
	signatureMask = 0xF0000000
	seqMask       = 0x0FFFFFFF
)

// Append appends the encoded header to b.
func (h Header) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, signatureMask|(h.Seq&seqMask))
	return binary.BigEndian.AppendUint32(b, h.Timestamp)
}

// IsDatagram reports whether b starts with the TSP UDP signature (high
// nibble 0xF), the test the gateway's UDP demultiplexer uses.
func IsDatagram(b []byte) bool { return len(b) > 0 && b[0]&0xF0 == 0xF0 }

// ParseDatagram splits a TSP datagram into header and payload, which
// aliases b.
func ParseDatagram(b []byte) (Header, []byte, error) {
	if len(b) < HeaderLen {
		return Header{}, nil, fmt.Errorf("%w: datagram of %d bytes is shorter than the header", ErrMalformed, len(b))
	}
	w := binary.BigEndian.Uint32(b)
	if w&signatureMask != signatureMask {
		return Header{}, nil, fmt.Errorf("%w: no 0xF signature", ErrMalformed)
	}
	if len(b)-HeaderLen > MaxDatagramPayload {
		return Header{}, nil, fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrMalformed, len(b)-HeaderLen, MaxDatagramPayload)
	}
	h := Header{Seq: w & seqMask, Timestamp: binary.BigEndian.Uint32(b[4:])}
	return h, b[HeaderLen:], nil
}

// AppendDatagram appends header h followed by payload to b.
func AppendDatagram(b []byte, h Header, payload []byte) []byte {
	return append(h.Append(b), payload...)
}
