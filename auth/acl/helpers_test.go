package acl

import (
	"encoding/binary"
	"net/netip"
)

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func a4(s string) [4]byte { return netip.MustParseAddr(s).As4() }

// pkt builds a minimal valid IPv4 packet with an L4 header.
func pkt(proto uint8, src, dst string, sport, dport uint16, flags byte) []byte {
	l4 := 8
	if proto == ipTCP {
		l4 = 20
	}
	p := make([]byte, 20+l4)
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, d := a4(src), a4(dst)
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	switch proto {
	case ipTCP:
		binary.BigEndian.PutUint16(p[20:], sport)
		binary.BigEndian.PutUint16(p[22:], dport)
		p[32], p[33] = 0x50, flags
	case ipUDP:
		binary.BigEndian.PutUint16(p[20:], sport)
		binary.BigEndian.PutUint16(p[22:], dport)
		binary.BigEndian.PutUint16(p[24:], 8)
	case ipICMP:
		p[20] = byte(sport)                       // type
		binary.BigEndian.PutUint16(p[24:], dport) // echo id
	}
	return p
}

func flow(proto uint8, src, dst string, sport, dport uint16) *Flow {
	f := &Flow{}
	if !Classify(pkt(proto, src, dst, sport, dport, 0), f) {
		panic("unclassifiable test packet")
	}
	return f
}

// naive is the reference matcher: the first rule, in order, whose prefix,
// protocol and port allow the flow.
func naive(rules []Rule, d Dir, f *Flow) int32 {
	addr, port := f.Dst, f.DstPort
	if d == Inbound {
		addr = f.Src
	}
	a := netip.AddrFrom4(addr)
	for i, r := range rules {
		in := false
		for _, p := range r.nets(d) {
			in = in || p.Contains(a)
		}
		if !in {
			continue
		}
		switch r.Proto {
		case ProtoTCP, ProtoUDP, ProtoICMP:
			if map[string]uint8{ProtoTCP: ipTCP, ProtoUDP: ipUDP, ProtoICMP: ipICMP}[r.Proto] != f.Proto {
				continue
			}
		}
		if len(r.Ports) == 0 {
			return int32(i)
		}
		if f.Proto != ipTCP && f.Proto != ipUDP {
			continue
		}
		for _, pr := range r.Ports {
			if pr.Lo <= port && port <= pr.Hi {
				return int32(i)
			}
		}
	}
	return NoRule
}
