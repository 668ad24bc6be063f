package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

var (
	addrA = netip.MustParseAddr("192.0.2.10")
	addrB = netip.MustParseAddr("198.51.100.7")
)

// buildIPv4 returns a well-formed IPv4 packet with a correct header checksum.
func buildIPv4(src, dst netip.Addr, proto uint8, df bool, payload []byte) []byte {
	p := make([]byte, HeaderLen+len(payload))
	writeIPv4Header(p, len(p), proto, src, dst)
	p[1] = 0
	if df {
		binary.BigEndian.PutUint16(p[6:8], flagDF)
	}
	copy(p[HeaderLen:], payload)
	SetHeaderChecksum(p)
	return p
}

// buildTCP returns an IPv4/TCP segment with the given flags and options
// (padded to 4 bytes by the caller) and a correct TCP checksum.
func buildTCP(src, dst netip.Addr, flags byte, opts, payload []byte) []byte {
	tcp := make([]byte, tcpMinHeader+len(opts)+len(payload))
	binary.BigEndian.PutUint16(tcp[0:2], 40000)
	binary.BigEndian.PutUint16(tcp[2:4], 80)
	binary.BigEndian.PutUint32(tcp[4:8], 12345)
	tcp[12] = byte((tcpMinHeader+len(opts))/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:16], 65535)
	copy(tcp[tcpMinHeader:], opts)
	copy(tcp[tcpMinHeader+len(opts):], payload)
	p := buildIPv4(src, dst, ProtoTCP, true, tcp)
	setTCPChecksum(p)
	return p
}

func setTCPChecksum(p []byte) {
	tcp := p[HeaderLength(p):TotalLen(p)]
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:18], Checksum(tcp, PseudoHeaderSum(p, len(tcp))))
}

func tcpChecksumValid(p []byte) bool {
	tcp := p[HeaderLength(p):TotalLen(p)]
	return Checksum(tcp, PseudoHeaderSum(p, len(tcp))) == 0
}

func mssOf(p []byte) (uint16, bool) {
	tcp := p[HeaderLength(p):TotalLen(p)]
	if len(tcp) < tcpMinHeader {
		return 0, false
	}
	off := int(tcp[12]>>4) * 4
	if off < tcpMinHeader || off > len(tcp) {
		return 0, false
	}
	at := findMSS(tcp[:off])
	if at < 0 {
		return 0, false
	}
	return binary.BigEndian.Uint16(tcp[at:]), true
}

func TestCheck(t *testing.T) {
	good := buildIPv4(addrA, addrB, ProtoUDP, false, make([]byte, 8))
	mut := func(f func(p []byte) []byte) []byte {
		p := append([]byte(nil), good...)
		return f(p)
	}
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"good", good, nil},
		{"padded", append(append([]byte(nil), good...), 0, 0, 0), nil},
		{"empty", nil, ErrShort},
		{"short", good[:19], ErrShort},
		{"ipv6", mut(func(p []byte) []byte { p[0] = 0x65; return p }), ErrVersion},
		{"ihl small", mut(func(p []byte) []byte { p[0] = 0x44; return p }), ErrHeaderLen},
		{"ihl beyond buffer", mut(func(p []byte) []byte { p[0] = 0x4f; return p }), ErrHeaderLen},
		{"total below header", mut(func(p []byte) []byte { p[3] = 10; return p }), ErrTotalLen},
		{"total beyond buffer", mut(func(p []byte) []byte { p[3] = 200; return p }), ErrTotalLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Check(tt.pkt); !errors.Is(err, tt.want) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAccessors(t *testing.T) {
	p := buildIPv4(addrA, addrB, ProtoUDP, true, make([]byte, 12))
	if Src(p) != addrA || Dst(p) != addrB || Proto(p) != ProtoUDP || !DF(p) || FragOffset(p) != 0 {
		t.Fatalf("accessors: src %v dst %v proto %d df %v off %d", Src(p), Dst(p), Proto(p), DF(p), FragOffset(p))
	}
	if HeaderLength(p) != 20 || TotalLen(p) != 32 || len(Trim(append(p, 1, 2))) != 32 {
		t.Fatalf("lengths: hl %d tl %d", HeaderLength(p), TotalLen(p))
	}
	if !HeaderChecksumValid(p) {
		t.Fatal("header checksum invalid")
	}
	binary.BigEndian.PutUint16(p[6:8], 0x0003)
	if FragOffset(p) != 24 || DF(p) {
		t.Fatalf("fragment accessors: off %d df %v", FragOffset(p), DF(p))
	}
}

func TestUpdateChecksum(t *testing.T) {
	tests := []struct{ old, new uint16 }{{0, 0}, {0x1234, 0xabcd}, {0xffff, 0}, {0, 0xffff}, {1460, 1240}, {0x8000, 0x7fff}}
	for _, tt := range tests {
		p := buildIPv4(addrA, addrB, ProtoUDP, false, make([]byte, 8))
		binary.BigEndian.PutUint16(p[4:6], tt.old)
		SetHeaderChecksum(p)
		binary.BigEndian.PutUint16(p[4:6], tt.new)
		sum := binary.BigEndian.Uint16(p[10:12])
		binary.BigEndian.PutUint16(p[10:12], UpdateChecksum(sum, tt.old, tt.new))
		if !HeaderChecksumValid(p) {
			t.Errorf("%#x -> %#x: incremental checksum invalid", tt.old, tt.new)
		}
	}
}

func mssOpt(v uint16) []byte { return []byte{tcpOptMSS, 4, byte(v >> 8), byte(v)} }

func TestClampMSS(t *testing.T) {
	odd := append([]byte{tcpOptNOP}, mssOpt(1460)...)
	odd = append(odd, tcpOptNOP, tcpOptNOP, tcpOptNOP) // MSS value at an odd offset
	tests := []struct {
		name    string
		flags   byte
		opts    []byte
		max     uint16
		changed bool
		want    uint16
	}{
		{"syn clamped", tcpFlagSYN, mssOpt(1460), 1240, true, 1240},
		{"syn-ack clamped", tcpFlagSYN | 0x10, mssOpt(8960), 1240, true, 1240},
		{"syn already small", tcpFlagSYN, mssOpt(536), 1240, false, 536},
		{"syn equal", tcpFlagSYN, mssOpt(1240), 1240, false, 1240},
		{"ack ignored", 0x10, mssOpt(1460), 1240, false, 1460},
		{"odd offset", tcpFlagSYN, odd, 1200, true, 1200},
		{"after sack-permitted and timestamps", tcpFlagSYN, append([]byte{4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1}, mssOpt(1460)...), 1000, true, 1000},
		{"after EOL ignored", tcpFlagSYN, append([]byte{0, 1, 1, 1}, mssOpt(1460)...), 1000, false, 0},
		{"bad option length", tcpFlagSYN, []byte{8, 0, 1, 1}, 1000, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := buildTCP(addrA, addrB, tt.flags, tt.opts, []byte("hello"))
			before, hadMSS := SYNMSS(p)
			if got := ClampMSS(p, tt.max); got != tt.changed {
				t.Fatalf("ClampMSS = %v, want %v", got, tt.changed)
			}
			if !tcpChecksumValid(p) || !HeaderChecksumValid(p) {
				t.Fatal("checksum invalid after clamp")
			}
			if got, ok := mssOf(p); tt.want != 0 && (!ok || got != tt.want) {
				t.Fatalf("MSS = %d (%v), want %d", got, ok, tt.want)
			}
			after, hasMSS := SYNMSS(p)
			if isSYN := tt.flags&tcpFlagSYN != 0; hadMSS != (isSYN && tt.want != 0) || hasMSS != hadMSS || (hasMSS && after != tt.want) {
				t.Fatalf("SYNMSS before %d/%v after %d/%v", before, hadMSS, after, hasMSS)
			}
		})
	}
}

func TestClampMSSIgnoresNonTCPAndFragments(t *testing.T) {
	udp := buildIPv4(addrA, addrB, ProtoUDP, false, append(make([]byte, 13), tcpFlagSYN))
	if ClampMSS(udp, 100) {
		t.Fatal("clamped a UDP packet")
	}
	frag := buildTCP(addrA, addrB, tcpFlagSYN, mssOpt(1460), nil)
	binary.BigEndian.PutUint16(frag[6:8], 1)
	if ClampMSS(frag, 100) {
		t.Fatal("clamped a non-first fragment")
	}
}

func TestMSSForMTU(t *testing.T) {
	for _, tt := range []struct {
		mtu  int
		want uint16
	}{{1280, 1240}, {1500, 1460}, {30, 0}, {1 << 20, 0xffff}} {
		if got := MSSForMTU(tt.mtu); got != tt.want {
			t.Errorf("MSSForMTU(%d) = %d, want %d", tt.mtu, got, tt.want)
		}
	}
}

func TestICMPBuilders(t *testing.T) {
	from := netip.MustParseAddr("10.99.0.1")
	big := buildIPv4(addrA, addrB, ProtoUDP, true, make([]byte, 1400))
	small := buildIPv4(addrA, addrB, ProtoUDP, false, make([]byte, 8))
	tests := []struct {
		name  string
		build func(b, orig []byte) ([]byte, error)
		orig  []byte
		code  uint8
		mtu   uint16
		quote int
	}{
		{"host unreachable", func(b, o []byte) ([]byte, error) { return AppendHostUnreachable(b, o, from) }, small, CodeHostUnreachable, 0, 28},
		{"administratively prohibited", func(b, o []byte) ([]byte, error) { return AppendAdminProhibited(b, o, from) }, small, CodeAdminProhibited, 0, 28},
		{"frag needed truncates quote", func(b, o []byte) ([]byte, error) { return AppendFragNeeded(b, o, from, 1280) }, big, CodeFragNeeded, 1280, 548},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.build(make([]byte, 0, MaxICMPErrorLen), tt.orig)
			if err != nil {
				t.Fatal(err)
			}
			if Check(out) != nil || !HeaderChecksumValid(out) || Proto(out) != ProtoICMP {
				t.Fatal("bad outer header")
			}
			if Src(out) != from || Dst(out) != addrA {
				t.Fatalf("addresses %v -> %v", Src(out), Dst(out))
			}
			icmp := out[HeaderLen:]
			if icmp[0] != ICMPTypeUnreachable || icmp[1] != tt.code || binary.BigEndian.Uint16(icmp[6:8]) != tt.mtu {
				t.Fatalf("icmp type %d code %d mtu %d", icmp[0], icmp[1], binary.BigEndian.Uint16(icmp[6:8]))
			}
			if Checksum(icmp, 0) != 0 {
				t.Fatal("ICMP checksum invalid")
			}
			if len(icmp)-icmpHeaderLen != tt.quote || len(out) > MaxICMPErrorLen {
				t.Fatalf("quote %d bytes, total %d", len(icmp)-icmpHeaderLen, len(out))
			}
		})
	}
}

func TestICMPNotEligible(t *testing.T) {
	from := netip.MustParseAddr("10.99.0.1")
	icmpErr := buildIPv4(addrA, addrB, ProtoICMP, false, []byte{ICMPTypeUnreachable, 1, 0, 0, 0, 0, 0, 0})
	echo := buildIPv4(addrA, addrB, ProtoICMP, false, []byte{ICMPTypeEcho, 0, 0, 0, 0, 0, 0, 0})
	frag := buildIPv4(addrA, addrB, ProtoUDP, false, make([]byte, 8))
	binary.BigEndian.PutUint16(frag[6:8], 2)
	tests := []struct {
		name string
		orig []byte
		ok   bool
	}{
		{"echo", echo, true},
		{"icmp error", icmpErr, false},
		{"non-first fragment", frag, false},
		{"broadcast dst", buildIPv4(addrA, netip.MustParseAddr("255.255.255.255"), ProtoUDP, false, nil), false},
		{"multicast dst", buildIPv4(addrA, netip.MustParseAddr("224.0.0.5"), ProtoUDP, false, nil), false},
		{"unspecified src", buildIPv4(netip.IPv4Unspecified(), addrB, ProtoUDP, false, nil), false},
		{"loopback src", buildIPv4(netip.MustParseAddr("127.0.0.1"), addrB, ProtoUDP, false, nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := AppendHostUnreachable(nil, tt.orig, from)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if _, err := AppendHostUnreachable(nil, []byte{0x45}, from); !errors.Is(err, ErrShort) {
		t.Fatalf("malformed orig: %v", err)
	}
}

func TestNoAllocs(t *testing.T) {
	p := buildTCP(addrA, addrB, tcpFlagSYN, mssOpt(1460), nil)
	buf := make([]byte, 0, MaxICMPErrorLen)
	from := netip.MustParseAddr("10.99.0.1")
	allocs := testing.AllocsPerRun(100, func() {
		_ = Check(p)
		_ = Src(p)
		_ = Dst(p)
		ClampMSS(p, 1240)
		_, _ = AppendHostUnreachable(buf[:0], p, from)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}
