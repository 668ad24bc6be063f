package tep

import (
	"context"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

// genTUN is a benchmark device whose reads return copies of one packet, a
// full batch per call, until n packets were read. Writes are discarded.
type genTUN struct {
	pkt    []byte
	left   atomic.Int64
	batch  int
	closed chan struct{}
	once   sync.Once
}

var _ tun.Device = (*genTUN)(nil)

func (g *genTUN) File() *os.File { return nil }

func (g *genTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	runtime.Gosched() // a real TUN read blocks in the kernel and lets writers run
	n := int(min(int64(len(bufs)), g.left.Load()))
	if n <= 0 {
		<-g.closed
		return 0, os.ErrClosed
	}
	g.left.Add(int64(-n))
	for i := 0; i < n; i++ {
		sizes[i] = copy(bufs[i][offset:], g.pkt)
	}
	return n, nil
}

func (g *genTUN) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (g *genTUN) MTU() (int, error)                            { return DefaultMTU, nil }
func (g *genTUN) Name() (string, error)                        { return "dstmgen", nil }
func (g *genTUN) Events() <-chan tun.Event                     { return nil }
func (g *genTUN) BatchSize() int                               { return g.batch }
func (g *genTUN) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

// BenchmarkTEPInside measures the inside path on one core: TUN batch read
// (128 packets of 1280 bytes), registry lookup, MSS check, queueing, and the
// session writer handing batches to a discarding link.
func BenchmarkTEPInside(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	dev := &genTUN{pkt: ipv4(server, lease, packet.ProtoUDP, DefaultMTU, true, 0), batch: 128, closed: make(chan struct{})}
	tp, err := New(Config{Device: dev, InnerAddr: inner, Pools: []netip.Prefix{pool}})
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
	dev.left.Store(int64(b.N))
	b.SetBytes(DefaultMTU)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	go func() { _ = tp.Run(context.Background()) }()
	for link.count.Load()+tp.drops[DropQueueFull].Load() < uint64(b.N) {
		runtime.Gosched()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	tp.Close()
	b.ReportMetric(float64(link.count.Load())/elapsed.Seconds(), "pkts/s")
	b.ReportMetric(float64(tp.drops[DropQueueFull].Load()), "drops")
}

// BenchmarkTEPOutside measures the outside path on one core: batches of 64
// packets from a link through the source check and MSS check into the TUN
// device's Write (discarding).
func BenchmarkTEPOutside(b *testing.B) { benchOutside(b, nil) }

// benchOutside runs BenchmarkTEPOutside with the access rules of access (nil: none) and
// returns the TEP, stopped, for its counters.
func benchOutside(b *testing.B, access func(string, []string) *acl.Set) *TEP {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	dev := &genTUN{batch: 1, closed: make(chan struct{})}
	tp, err := New(Config{Device: dev, InnerAddr: inner, Pools: []netip.Prefix{pool}, Access: access})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	s, err := tp.AddSession(SessionInfo{ID: "b", Lease: lease})
	if err != nil {
		b.Fatal(err)
	}
	batch := make([][]byte, writeBatch)
	for i := range batch {
		batch[i] = ipv4(lease, server, packet.ProtoUDP, DefaultMTU, true, 0)
	}
	b.SetBytes(DefaultMTU)
	b.ReportAllocs()
	start := time.Now()
	for sent := 0; sent < b.N; sent += writeBatch {
		s.ReceivePackets(batch[:min(writeBatch, b.N-sent)])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pkts/s")
	return tp
}

// BenchmarkRegistryLookup compares the sharded copy-on-write registry with
// sync.Map for 10 000 sessions.
func BenchmarkRegistryLookup(b *testing.B) {
	const n = 10000
	var reg registry
	var sm sync.Map
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		s := &Session{info: SessionInfo{Lease: addrs[i]}}
		reg.mu.Lock()
		reg.addLocked(s)
		reg.mu.Unlock()
		k, _ := key(addrs[i])
		sm.Store(k, s)
	}
	b.Run("sharded-cow", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if reg.lookupKey(addrs[i%n].As4()) == nil {
				b.Fatal("miss")
			}
			i++
		}
	})
	b.Run("sync.Map", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k, _ := key(addrs[i%n])
			if _, ok := sm.Load(k); !ok {
				b.Fatal("miss")
			}
			i++
		}
	})
}

// BenchmarkAddRemoveSession measures what a session costs the gateway from
// AddSession to RemoveSession: "no-link" is a TSP session whose data channel
// never came up, "link" one that got a link (and with it the writer).
func BenchmarkAddRemoveSession(b *testing.B) {
	for _, withLink := range []bool{false, true} {
		name := "no-link"
		if withLink {
			name = "link"
		}
		b.Run(name, func(b *testing.B) {
			dev := newFakeTUN(1)
			tp, err := New(Config{Device: dev, InnerAddr: inner, Pools: []netip.Prefix{pool}})
			if err != nil {
				b.Fatal(err)
			}
			defer tp.Close()
			link := newFakeLink(tunnel.Plain)
			info := SessionInfo{ID: "b", Identity: "alice", Lease: lease, Transport: tunnel.Plain}
			b.ReportAllocs()
			for b.Loop() {
				s, err := tp.AddSession(info)
				if err != nil {
					b.Fatal(err)
				}
				if withLink {
					s.SetLink(link)
				}
				tp.RemoveSession(lease, info.ID)
			}
		})
	}
}
