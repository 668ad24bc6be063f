package acl

import (
	"fmt"
	"net/netip"
	"strings"
)

// Target is one packet as policy tests and `policy explain` name it:
// "10.1.2.3:443/tcp", "10.1.2.3:53/udp" or "10.1.2.3/icmp" (an echo
// request). Outbound, Addr is the destination; inbound, the source, and
// Port is the client's port.
type Target struct {
	Addr  netip.Addr
	Port  uint16
	Proto string // tcp, udp or icmp
}

// ParseTarget parses "ADDR:PORT/tcp", "ADDR:PORT/udp" or "ADDR/icmp".
func ParseTarget(s string) (Target, error) {
	hostPort, proto, ok := strings.Cut(s, "/")
	if !ok {
		return Target{}, fmt.Errorf("%q: want ADDR:PORT/tcp, ADDR:PORT/udp or ADDR/icmp", s)
	}
	t := Target{Proto: strings.ToLower(proto)}
	switch t.Proto {
	case ProtoICMP:
		a, err := netip.ParseAddr(hostPort)
		if err != nil || !a.Is4() {
			return Target{}, fmt.Errorf("%q: %q is not an IPv4 address", s, hostPort)
		}
		t.Addr = a
	case ProtoTCP, ProtoUDP:
		ap, err := netip.ParseAddrPort(hostPort)
		if err != nil || !ap.Addr().Is4() || ap.Addr().Zone() != "" || ap.Port() == 0 {
			return Target{}, fmt.Errorf("%q: %q is not IPv4ADDR:PORT", s, hostPort)
		}
		t.Addr, t.Port = ap.Addr(), ap.Port()
	default:
		return Target{}, fmt.Errorf("%q: unknown protocol %q (want tcp, udp or icmp)", s, proto)
	}
	return t, nil
}

// String writes the target as it is read.
func (t Target) String() string {
	if t.Proto == ProtoICMP {
		return t.Addr.String() + "/icmp"
	}
	return netip.AddrPortFrom(t.Addr, t.Port).String() + "/" + t.Proto
}

// Flow returns the first packet of the target's flow in direction d for
// a client at lease.
func (t Target) Flow(d Dir, lease netip.Addr) *Flow {
	f := &Flow{Proto: ipICMP}
	switch t.Proto {
	case ProtoTCP:
		f.Proto = ipTCP
	case ProtoUDP:
		f.Proto = ipUDP
	}
	peer, me := t.Addr.As4(), lease.As4()
	if d == Outbound {
		f.Src, f.Dst, f.SrcPort, f.DstPort = me, peer, 40000, t.Port
	} else {
		f.Src, f.Dst, f.SrcPort, f.DstPort = peer, me, 40000, t.Port
	}
	if f.Proto == ipICMP {
		f.ICMPType, f.SrcPort, f.DstPort = icmpEcho, 1, 1
	}
	if f.Proto == ipTCP {
		f.TCPFlags = tcpSYN
	}
	return f
}
