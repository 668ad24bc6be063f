package packet

import (
	"net/netip"
	"testing"
)

func BenchmarkCheck(b *testing.B) {
	p := buildIPv4(addrA, addrB, ProtoUDP, true, make([]byte, 1380))
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if Check(p) != nil {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkClampMSS(b *testing.B) {
	p := buildTCP(addrA, addrB, tcpFlagSYN, mssOpt(1460), nil)
	orig := append([]byte(nil), p...)
	for b.Loop() {
		copy(p, orig)
		if !ClampMSS(p, 1240) {
			b.Fatal("not clamped")
		}
	}
}

func BenchmarkHeaderChecksum(b *testing.B) {
	p := buildIPv4(addrA, addrB, ProtoUDP, true, nil)
	for b.Loop() {
		SetHeaderChecksum(p)
	}
}

func BenchmarkHostUnreachable(b *testing.B) {
	p := buildIPv4(addrA, addrB, ProtoUDP, true, make([]byte, 1380))
	buf := make([]byte, 0, MaxICMPErrorLen)
	from := netip.MustParseAddr("10.99.0.1")
	for b.Loop() {
		if _, err := AppendHostUnreachable(buf[:0], p, from); err != nil {
			b.Fatal(err)
		}
	}
}
