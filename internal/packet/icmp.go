package packet

import (
	"encoding/binary"
	"net/netip"
)

// ICMP types and codes used by the TEP.
const (
	ICMPTypeEchoReply      = 0
	ICMPTypeUnreachable    = 3
	ICMPTypeSourceQuench   = 4
	ICMPTypeRedirect       = 5
	ICMPTypeEcho           = 8
	ICMPTypeTimeExceeded   = 11
	ICMPTypeParamProblem   = 12
	CodeHostUnreachable    = 1
	CodeFragNeeded         = 4
	CodeAdminProhibited    = 13 // communication administratively prohibited (RFC 1812 5.2.7.1)
	icmpHeaderLen          = 8
	maxICMPErrorDatagram   = 576 // RFC 1812 4.3.2.3: an ICMP error does not exceed 576 bytes
	icmpTOSInternetControl = 0xc0
)

// MaxICMPErrorLen is the largest packet the ICMP error builders append; a
// buffer with this much spare capacity never reallocates.
const MaxICMPErrorLen = maxICMPErrorDatagram

// AppendHostUnreachable appends to b an ICMP host unreachable from src about
// orig, quoting as much of orig as fits in 576 bytes. It returns
// ErrNotEligible when RFC 1812 forbids an ICMP error about orig.
func AppendHostUnreachable(b, orig []byte, src netip.Addr) ([]byte, error) {
	return appendUnreachable(b, orig, src, CodeHostUnreachable, 0)
}

// AppendFragNeeded is AppendHostUnreachable for fragmentation needed with
// the next-hop MTU mtu (RFC 1191).
func AppendFragNeeded(b, orig []byte, src netip.Addr, mtu uint16) ([]byte, error) {
	return appendUnreachable(b, orig, src, CodeFragNeeded, mtu)
}

// AppendAdminProhibited is AppendHostUnreachable for "communication
// administratively prohibited" (a filter refused orig).
func AppendAdminProhibited(b, orig []byte, src netip.Addr) ([]byte, error) {
	return appendUnreachable(b, orig, src, CodeAdminProhibited, 0)
}

func appendUnreachable(b, orig []byte, src netip.Addr, code uint8, mtu uint16) ([]byte, error) {
	if err := Check(orig); err != nil {
		return b, err
	}
	if !src.Is4() || !Eligible(orig) {
		return b, ErrNotEligible
	}
	quote := Trim(orig)
	if max := maxICMPErrorDatagram - HeaderLen - icmpHeaderLen; len(quote) > max {
		quote = quote[:max]
	}
	total := HeaderLen + icmpHeaderLen + len(quote)
	start := len(b)
	b = grow(b, total)
	p := b[start:]
	writeIPv4Header(p, total, ProtoICMP, src, Src(orig))
	icmp := p[HeaderLen:]
	icmp[0], icmp[1] = ICMPTypeUnreachable, code
	icmp[2], icmp[3], icmp[4], icmp[5] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(icmp[6:8], mtu)
	copy(icmp[icmpHeaderLen:], quote)
	binary.BigEndian.PutUint16(icmp[2:4], Checksum(icmp, 0))
	return b, nil
}

// Eligible reports whether an ICMP error may be sent about the well-formed
// IPv4 packet pkt (RFC 1812 4.3.2.7): not about an ICMP error, a non-first
// fragment, or a packet from or to a broadcast, multicast, loopback,
// unspecified or class E address.
func Eligible(pkt []byte) bool {
	if FragOffset(pkt) != 0 || !unicast(Src(pkt)) || !unicast(Dst(pkt)) {
		return false
	}
	if Proto(pkt) != ProtoICMP {
		return true
	}
	icmp := pkt[HeaderLength(pkt):TotalLen(pkt)]
	if len(icmp) < 1 {
		return false
	}
	switch icmp[0] {
	case ICMPTypeUnreachable, ICMPTypeSourceQuench, ICMPTypeRedirect, ICMPTypeTimeExceeded, ICMPTypeParamProblem:
		return false
	}
	return true
}

func unicast(a netip.Addr) bool {
	b := a.As4()
	return !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && b[0] < 240
}

func writeIPv4Header(p []byte, total int, proto uint8, src, dst netip.Addr) {
	p[0], p[1] = versionIHL4, icmpTOSInternetControl
	binary.BigEndian.PutUint16(p[2:4], uint16(total))
	p[4], p[5], p[6], p[7] = 0, 0, 0, 0
	p[8], p[9] = defaultTTL, proto
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	SetHeaderChecksum(p)
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n)
	copy(nb, b)
	return nb
}
