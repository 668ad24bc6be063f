package packet

import "encoding/binary"

// TCP flags the reset builder uses (tcpFlagSYN and tcpMinHeader are in mss.go).
const (
	tcpFIN = 0x01
	tcpRST = 0x04
	tcpACK = 0x10
)

// MaxTCPResetLen is the length of the packets AppendTCPReset appends.
const MaxTCPResetLen = HeaderLen + tcpMinHeader

// AppendTCPReset appends to b the TCP RST that orig's destination would
// answer with (RFC 9293 3.10.7.1: seq = orig's ack if it has one, else
// ack = orig's seq + its length). It returns ErrNotEligible for a
// non-TCP packet, a fragment, a RST, or a packet not to and from unicast
// addresses.
func AppendTCPReset(b, orig []byte) ([]byte, error) {
	if err := Check(orig); err != nil {
		return b, err
	}
	orig = Trim(orig)
	hl := HeaderLength(orig)
	if Proto(orig) != ProtoTCP || FragOffset(orig) != 0 || len(orig) < hl+tcpMinHeader || !unicast(Src(orig)) || !unicast(Dst(orig)) {
		return b, ErrNotEligible
	}
	in := orig[hl:]
	flags := in[13]
	if flags&tcpRST != 0 {
		return b, ErrNotEligible
	}
	start := len(b)
	b = grow(b, MaxTCPResetLen)
	p := b[start:]
	writeIPv4Header(p, MaxTCPResetLen, ProtoTCP, Dst(orig), Src(orig))
	p[1] = 0
	SetHeaderChecksum(p)
	t := p[HeaderLen:]
	clear(t)
	copy(t[0:2], in[2:4]) // ports swapped
	copy(t[2:4], in[0:2])
	if flags&tcpACK != 0 {
		copy(t[4:8], in[8:12]) // seq = their ack
		t[13] = tcpRST
	} else {
		data := uint32(len(in) - int(in[12]>>4)*4)
		if flags&tcpFlagSYN != 0 {
			data++
		}
		if flags&tcpFIN != 0 {
			data++
		}
		binary.BigEndian.PutUint32(t[8:12], binary.BigEndian.Uint32(in[4:8])+data)
		t[13] = tcpRST | tcpACK
	}
	t[12] = tcpMinHeader / 4 << 4
	binary.BigEndian.PutUint16(t[16:18], Checksum(t, PseudoHeaderSum(p, tcpMinHeader)))
	return b, nil
}
