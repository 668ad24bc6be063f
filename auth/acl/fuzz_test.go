package acl

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzParsePortRange: whatever parses writes back to itself.
func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"443", "8000-8080", "1-65535", "0", "65536", "80-79", " 22 ", "1-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParsePortRange(s)
		if err != nil {
			return
		}
		if r.Lo == 0 || r.Hi < r.Lo {
			t.Fatalf("%q parsed to %v", s, r)
		}
		back, err := ParsePortRange(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %v -> %v, %v", s, r, back, err)
		}
	})
}

// FuzzClassify: any valid IPv4 packet classifies without panicking, and
// what it reads comes from the packet.
func FuzzClassify(f *testing.F) {
	f.Add(pkt(ipTCP, "100.64.0.2", "10.1.1.1", 40000, 80, tcpSYN))
	f.Add(pkt(ipUDP, "10.1.1.1", "100.64.0.2", 53, 5353, 0))
	f.Add(pkt(ipICMP, "10.1.1.1", "100.64.0.2", icmpEchoReply, 7, 0))
	icmp := pkt(ipICMP, "203.0.113.1", "100.64.0.2", 3, 0, 0)
	f.Add(append(icmp[:28], pkt(ipTCP, "100.64.0.2", "10.1.1.1", 40000, 80, 0)[:28]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 20 || b[0]>>4 != 4 || int(b[0]&0x0f)*4 < 20 || int(b[0]&0x0f)*4 > len(b) {
			return // not what packet.Check passes
		}
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		var fl Flow
		if !Classify(b, &fl) {
			return
		}
		if fl.Proto != b[9] || fl.Src != [4]byte(b[12:16]) || fl.Dst != [4]byte(b[16:20]) {
			t.Fatalf("header fields wrong: %+v", fl)
		}
		if fl.Quoted && fl.Proto != ipICMP {
			t.Fatal("quote outside ICMP")
		}
		if fl.Fragment && (fl.SrcPort != 0 || fl.DstPort != 0) {
			t.Fatal("ports read from a non-first fragment")
		}
	})
}

// FuzzCompile: rules built from the input compile (or fail validation) and
// the compiled matcher agrees with the naive one.
func FuzzCompile(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 8, 1, 0, 80, 0, 80}, []byte{6, 10, 0, 0, 1, 0, 80})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 2, 3, 32, 3, 0, 0, 0, 0}, []byte{1, 10, 1, 2, 3, 0, 0})
	f.Fuzz(func(t *testing.T, spec, probe []byte) {
		var rules []Rule
		for len(spec) >= 10 && len(rules) < 64 {
			p, err := netip.AddrFrom4([4]byte(spec[0:4])).Prefix(int(spec[4] % 33))
			if err != nil {
				t.Fatal(err)
			}
			r := Rule{To: []netip.Prefix{p}, Proto: []string{"", ProtoAny, ProtoTCP, ProtoUDP, ProtoICMP}[spec[5]%5]}
			lo, hi := binary.BigEndian.Uint16(spec[6:]), binary.BigEndian.Uint16(spec[8:])
			if lo != 0 && r.Proto != ProtoICMP {
				r.Ports = []PortRange{{lo, max(lo, hi)}}
			}
			rules = append(rules, r)
			spec = spec[10:]
		}
		s, err := Compile("fuzz", &Access{Outbound: rules})
		if err != nil {
			t.Fatal(err) // the generator builds valid rules only
		}
		for len(probe) >= 7 {
			fl := &Flow{Proto: probe[0], Dst: [4]byte(probe[1:5]), DstPort: binary.BigEndian.Uint16(probe[5:])}
			if fl.Proto != ipTCP && fl.Proto != ipUDP {
				fl.DstPort = 0
			}
			if got, want := s.Match(Outbound, fl), naive(rules, Outbound, fl); got != want {
				t.Fatalf("%+v: Match %d, naive %d; rules %+v", fl, got, want, rules)
			}
			probe = probe[7:]
		}
	})
}

// FuzzParseTarget: whatever parses writes back to itself.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"10.1.2.3:443/tcp", "10.1.2.3:53/UDP", "10.1.2.3/icmp", "10.1.2.3/tcp", "[::1]:1/tcp", "10.1.2.3:0/udp", "x/icmp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			return
		}
		back, err := ParseTarget(tg.String())
		if err != nil || back != tg {
			t.Fatalf("%q -> %v -> %v, %v", s, tg, back, err)
		}
	})
}
