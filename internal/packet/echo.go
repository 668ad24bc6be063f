package packet

import (
	"encoding/binary"
	"net/netip"
)

// EchoRequestLen is the length of the packets AppendEchoRequest builds.
const EchoRequestLen = HeaderLen + icmpHeaderLen

// AppendEchoRequest appends to b an IPv4 ICMP echo request without payload from src to dst,
// with identifier id and sequence number seq. src and dst must be IPv4 addresses.
func AppendEchoRequest(b []byte, src, dst netip.Addr, id, seq uint16) []byte {
	start := len(b)
	b = grow(b, EchoRequestLen)
	p := b[start:]
	writeIPv4Header(p, EchoRequestLen, ProtoICMP, src, dst)
	icmp := p[HeaderLen:]
	icmp[0], icmp[1], icmp[2], icmp[3] = ICMPTypeEcho, 0, 0, 0
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], seq)
	binary.BigEndian.PutUint16(icmp[2:4], Checksum(icmp, 0))
	return b
}
