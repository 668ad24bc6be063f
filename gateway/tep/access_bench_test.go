package tep

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

// benchAccess returns n rules, the last of which allows UDP to the
// benchmarks' server (n == 0: no access control).
func benchAccess(b *testing.B, n int) func(string, []string) *acl.Set {
	if n == 0 {
		return nil
	}
	var rules []acl.Rule
	for i := range n - 1 {
		rules = append(rules, acl.Rule{To: pfx(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)), Proto: acl.ProtoTCP,
			Ports: []acl.PortRange{{Lo: 443, Hi: 443}, {Lo: uint16(1000 + i), Hi: uint16(1000 + i)}}})
	}
	rules = append(rules, acl.Rule{To: pfx("198.51.100.0/24"), Proto: acl.ProtoUDP})
	return only(mustSet(b, "bench", &acl.Access{Outbound: rules}))
}

// BenchmarkTEPOutsideAccess is BenchmarkTEPOutside with access rules: every
// packet is classified, matched and tracked.
func BenchmarkTEPOutsideAccess(b *testing.B) {
	for _, n := range []int{0, 100, 1000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			tp := benchOutside(b, benchAccess(b, n))
			if d := tp.drops[DropDeniedOutbound].Load(); d != 0 {
				b.Fatalf("%d denied", d)
			}
		})
	}
}

// BenchmarkTEPInsideAccess is BenchmarkTEPInside with access rules: every
// packet from the server is a reply found in the connection table.
func BenchmarkTEPInsideAccess(b *testing.B) {
	for _, n := range []int{0, 100, 1000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			dev := &genTUN{pkt: ipv4(server, lease, packet.ProtoUDP, DefaultMTU, true, 0), batch: 128, closed: make(chan struct{})}
			tp, err := New(Config{Device: dev, InnerAddr: inner, Pools: []netip.Prefix{pool}, Access: benchAccess(b, n)})
			if err != nil {
				b.Fatal(err)
			}
			s, err := tp.AddSession(SessionInfo{ID: "b", Lease: lease})
			if err != nil {
				b.Fatal(err)
			}
			link := newFakeLink(tunnel.Plain)
			link.discard = true
			s.SetLink(link)
			s.ReceivePackets([][]byte{ipv4(lease, server, packet.ProtoUDP, 100, true, 0)}) // opens the flow
			dev.left.Store(int64(b.N))
			b.SetBytes(DefaultMTU)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			go func() { _ = tp.Run(context.Background()) }()
			for link.count.Load()+tp.drops[DropQueueFull].Load() < uint64(b.N) {
				if tp.drops[DropDeniedInbound].Load() != 0 {
					b.Fatal("replies denied")
				}
				runtime.Gosched()
			}
			elapsed := time.Since(start)
			b.StopTimer()
			tp.Close()
			b.ReportMetric(float64(link.count.Load())/elapsed.Seconds(), "pkts/s")
		})
	}
}
