package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// benchRules makes n outbound rules of /24s, each allowing two TCP ports,
// plus the flows that hit them.
func benchRules(n int) ([]Rule, []*Flow) {
	rng := rand.New(rand.NewPCG(5, 6))
	rules := make([]Rule, n)
	flows := make([]*Flow, 256)
	for i := range rules {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		port := uint16(1 + rng.IntN(60000))
		rules[i] = Rule{To: []netip.Prefix{p}, Proto: ProtoTCP, Ports: []PortRange{{port, port}, {443, 443}}}
	}
	for i := range flows {
		r := rules[rng.IntN(n)]
		dst := r.To[0].Addr().As4()
		dst[3] = byte(rng.IntN(256))
		flows[i] = &Flow{Proto: ipTCP, Dst: dst, SrcPort: 40000, DstPort: r.Ports[rng.IntN(2)].Lo}
	}
	return rules, flows
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			rules, flows := benchRules(n)
			s, err := Compile("bench", &Access{Outbound: rules})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if s.Match(Outbound, flows[i&255]) == NoRule {
					b.Fatal("no rule")
				}
				i++
			}
		})
	}
}

// BenchmarkDecide is the per-packet cost in the TEP: classify, match and
// track (one session's table, 256 flows).
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			rules, flows := benchRules(n)
			s, err := Compile("bench", &Access{Outbound: rules})
			if err != nil {
				b.Fatal(err)
			}
			pkts := make([][]byte, len(flows))
			for i, f := range flows {
				pkts[i] = pkt(ipTCP, "100.64.0.2", netip.AddrFrom4(f.Dst).String(), f.SrcPort+uint16(i), f.DstPort, 0x10)
			}
			ct := NewTable(TrackConfig{}, nil)
			var f Flow
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				Classify(pkts[i&255], &f)
				if v, _ := s.Decide(Outbound, &f, ct, 1, int64(i)); v != AllowRule {
					b.Fatal(v)
				}
				i++
			}
		})
	}
}
