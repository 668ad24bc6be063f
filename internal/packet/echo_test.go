package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestAppendEchoRequest(t *testing.T) {
	src, dst := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1")
	prefix := []byte{0xaa, 0xbb}
	b := AppendEchoRequest(prefix, src, dst, 7, 9)
	if len(b) != len(prefix)+EchoRequestLen || b[0] != 0xaa || b[1] != 0xbb {
		t.Fatalf("appended % x", b)
	}
	p := b[len(prefix):]
	if err := Check(p); err != nil {
		t.Fatal(err)
	}
	switch {
	case !HeaderChecksumValid(p):
		t.Fatal("bad IPv4 header checksum")
	case Checksum(p[HeaderLen:], 0) != 0:
		t.Fatal("bad ICMP checksum")
	case Proto(p) != ProtoICMP || p[HeaderLen] != ICMPTypeEcho || p[HeaderLen+1] != 0:
		t.Fatalf("not an echo request: % x", p)
	case Src(p) != src || Dst(p) != dst:
		t.Fatalf("addresses %v -> %v", Src(p), Dst(p))
	case binary.BigEndian.Uint16(p[HeaderLen+4:]) != 7 || binary.BigEndian.Uint16(p[HeaderLen+6:]) != 9:
		t.Fatalf("id/seq: % x", p[HeaderLen+4:])
	}
}
