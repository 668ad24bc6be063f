package acl

import "encoding/binary"

// Dir is the direction of a packet, seen from the client.
type Dir uint8

// Directions.
const (
	Outbound Dir = iota // from the client (tunnel → TUN)
	Inbound             // to the client (TUN → tunnel)
)

func (d Dir) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// IP protocol numbers and TCP flags the classifier looks at.
const (
	ipICMP = 1
	ipTCP  = 6
	ipUDP  = 17

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04

	icmpEchoReply = 0
	icmpEcho      = 8
)

// Flow is what the rules and the connection table look at in one IPv4
// packet. For ICMP echo, SrcPort and DstPort are both the echo identifier.
type Flow struct {
	Proto            uint8
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
	ICMPType         uint8
	TCPFlags         uint8
	// Fragment: a non-first fragment, which carries no ports.
	Fragment bool
	// Quoted: an ICMP error whose quoted header was read into Q (the flow
	// the error is about, as the erring packet had it).
	Quoted bool
	Q      struct {
		Proto            uint8
		Src, Dst         [4]byte
		SrcPort, DstPort uint16
	}
}

// Classify reads pkt, a valid and trimmed IPv4 packet (packet.Check and
// packet.Trim), into f. It returns false for packets no rule should judge:
// a first fragment too short to hold its ports or TCP flags, a TCP fragment
// at offset 8 (the overlapping-fragment attack of RFC 1858), or an ICMP
// message shorter than its header.
func Classify(pkt []byte, f *Flow) bool {
	*f = Flow{Proto: pkt[9], Src: [4]byte(pkt[12:16]), Dst: [4]byte(pkt[16:20])}
	off := binary.BigEndian.Uint16(pkt[6:8]) & 0x1fff
	if off != 0 {
		f.Fragment = true
		return !(f.Proto == ipTCP && off == 1)
	}
	l4 := pkt[int(pkt[0]&0x0f)*4:]
	switch f.Proto {
	case ipTCP:
		if len(l4) < 14 {
			return false
		}
		f.SrcPort, f.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		f.TCPFlags = l4[13]
	case ipUDP:
		if len(l4) < 4 {
			return false
		}
		f.SrcPort, f.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	case ipICMP:
		if len(l4) < 8 {
			return false
		}
		f.ICMPType = l4[0]
		switch f.ICMPType {
		case icmpEcho, icmpEchoReply:
			id := binary.BigEndian.Uint16(l4[4:])
			f.SrcPort, f.DstPort = id, id
		case 3, 4, 11, 12: // unreachable, source quench, time exceeded, parameter problem
			quote(l4[8:], f)
		}
	}
	return true
}

// quote reads the header an ICMP error quotes (its IPv4 header and the
// first 8 bytes after it, RFC 792).
func quote(q []byte, f *Flow) {
	if len(q) < 20 || q[0]>>4 != 4 {
		return
	}
	ihl := int(q[0]&0x0f) * 4
	if ihl < 20 || len(q) < ihl+8 || binary.BigEndian.Uint16(q[6:8])&0x1fff != 0 {
		return
	}
	f.Quoted = true
	f.Q.Proto, f.Q.Src, f.Q.Dst = q[9], [4]byte(q[12:16]), [4]byte(q[16:20])
	l4 := q[ihl:]
	switch f.Q.Proto {
	case ipTCP, ipUDP:
		f.Q.SrcPort, f.Q.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	case ipICMP:
		id := binary.BigEndian.Uint16(l4[4:])
		f.Q.SrcPort, f.Q.DstPort = id, id
	}
}
