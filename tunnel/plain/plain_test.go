//go:build linux

package plain

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstmgw/dstm/internal/netns"
	"github.com/dstmgw/dstm/tunnel"
)

var (
	gwAddr  = netip.MustParsePrefix("fd00:d57b::1/64")
	cliAddr = netip.MustParsePrefix("fd00:d57b::2/64")
	cli2    = netip.MustParsePrefix("fd00:d57b::3/64")
)

// chanReceiver copies every packet into a channel.
type chanReceiver struct{ c chan []byte }

func newChanReceiver() *chanReceiver { return &chanReceiver{c: make(chan []byte, 1024)} }

func (r *chanReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		r.receive(p)
	}
}

func (r *chanReceiver) receive(p []byte) { r.c <- append([]byte(nil), p...) }

func (r *chanReceiver) next(t *testing.T) []byte {
	t.Helper()
	select {
	case p := <-r.c:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("timeout waiting for a packet")
		return nil
	}
}

// batchReceiver records the batch sizes it was called with.
type batchReceiver struct {
	chanReceiver
	batches chan int
}

func (r *batchReceiver) ReceivePackets(pkts [][]byte) {
	r.batches <- len(pkts)
	for _, p := range pkts {
		r.receive(p)
	}
}

type pair struct {
	gwNS, cliNS *netns.NS
}

func newPair(t testing.TB) pair {
	t.Helper()
	netns.SkipUnlessRoot(t)
	p := pair{gwNS: netns.New(t, "pg"), cliNS: netns.New(t, "pc")}
	steps := []func() error{
		func() error { return netns.LinkVeth(p.cliNS, "dstmc0", p.gwNS, "dstmg0") },
		func() error { return p.gwNS.AddAddr("dstmg0", gwAddr) },
		func() error { return p.cliNS.AddAddr("dstmc0", cliAddr) },
		func() error { return p.cliNS.AddAddr("dstmc0", cli2) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p pair) listen(t testing.TB) *Server {
	t.Helper()
	var s *Server
	if err := p.gwNS.Do(func() (err error) { s, err = Listen(gwAddr.Addr()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (p pair) dial(t testing.TB, local netip.Addr, r tunnel.Receiver) *ClientLink {
	t.Helper()
	var c *ClientLink
	if err := p.cliNS.Do(func() (err error) { c, err = Dial(local, gwAddr.Addr(), r); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timeout waiting for %s", what)
		}
	}
}

func payload(i int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, 100+i)
	b[0] = 0x45
	return b
}

func TestRoundTrip(t *testing.T) {
	goroutines := runtime.NumGoroutine()
	p := newPair(t)
	srv := p.listen(t)
	gwRecv := &batchReceiver{chanReceiver: *newChanReceiver(), batches: make(chan int, 1024)}
	cliRecv := newChanReceiver()
	link, err := srv.Register(cliAddr.Addr(), gwRecv)
	if err != nil {
		t.Fatal(err)
	}
	cl := p.dial(t, cliAddr.Addr(), cliRecv)

	var out [][]byte
	for i := range 150 {
		out = append(out, payload(i))
	}
	if err := cl.WritePackets(out); err != nil {
		t.Fatal(err)
	}
	for i := range out {
		if got := gwRecv.next(t); !bytes.Equal(got, out[i]) {
			t.Fatalf("gateway got packet %d of %d bytes, want %d", i, len(got), len(out[i]))
		}
	}
	if err := link.WritePackets(out[:3]); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if got := cliRecv.next(t); !bytes.Equal(got, out[i]) {
			t.Fatalf("client got wrong packet %d", i)
		}
	}
	if st := srv.Stats(); st.RxPackets != 150 || st.TxPackets != 3 {
		t.Fatalf("stats %+v", st)
	}
	if ep := link.(interface{ Endpoint() netip.AddrPort }).Endpoint(); ep.Addr() != cliAddr.Addr() {
		t.Fatalf("endpoint %v", ep)
	}
	cl.Close()
	srv.Close()
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= goroutines })
}

func TestUnknownSourceAndClose(t *testing.T) {
	p := newPair(t)
	srv := p.listen(t)
	known := newChanReceiver()
	link, err := srv.Register(cliAddr.Addr(), known)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Register(cliAddr.Addr(), known); !errors.Is(err, ErrEndpointInUse) {
		t.Fatalf("duplicate Register: %v", err)
	}
	stranger := p.dial(t, cli2.Addr(), newChanReceiver())
	if err := stranger.WritePackets([][]byte{payload(1), payload(2)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unknown-source drops", func() bool { return srv.Stats().UnknownSource == 2 })

	if err := link.Close(); err != nil {
		t.Fatal(err)
	}
	if err := link.WritePackets([][]byte{payload(1)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	cl := p.dial(t, cliAddr.Addr(), newChanReceiver())
	if err := cl.WritePackets([][]byte{payload(3)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "drop after unregister", func() bool { return srv.Stats().UnknownSource == 3 })
	select {
	case <-known.c:
		t.Fatal("unregistered receiver got a packet")
	default:
	}
	// The endpoint can be registered again once its link is closed.
	if l, err := srv.Register(cliAddr.Addr(), known); err != nil {
		t.Fatal(err)
	} else {
		l.Close()
	}
}

func TestSocketBuffers(t *testing.T) {
	p := newPair(t)
	srv := p.listen(t)
	for _, opt := range []int{unix.SO_RCVBUF, unix.SO_SNDBUF} {
		v, err := socketBuffer(srv.rc, opt)
		if err != nil {
			t.Fatal(err)
		}
		if v < SocketBuffer { // the kernel reports twice the requested size
			t.Errorf("buffer option %d = %d, want >= %d", opt, v, SocketBuffer)
		}
	}
}

func TestListenRejectsIPv4(t *testing.T) {
	if _, err := Listen(netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Fatal("Listen accepted an IPv4 address")
	}
}

func TestWriteAllocations(t *testing.T) {
	p := newPair(t)
	srv := p.listen(t)
	link, err := srv.Register(cliAddr.Addr(), newChanReceiver())
	if err != nil {
		t.Fatal(err)
	}
	pkts := [][]byte{payload(1), payload(2), payload(3)}
	if a := testing.AllocsPerRun(200, func() { _ = link.WritePackets(pkts) }); a != 0 {
		t.Fatalf("%v allocations per WritePackets", a)
	}
}

// countReceiver counts packets and returns one credit per credit packets.
type countReceiver struct {
	n      atomic.Int64
	credit chan struct{}
	per    int64
}

func (r *countReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		r.receive(p)
	}
}

func (r *countReceiver) receive(p []byte) {
	if r.n.Add(1)%r.per == 0 {
		select {
		case r.credit <- struct{}{}:
		default:
		}
	}
}

// BenchmarkPlainTransport measures the packets per second one client socket
// delivers through the kernel to the gateway socket's receiver (1400-byte
// inner packets, batches of BatchSize, windowed to avoid buffer overflow),
// with the Go side on one core (GOMAXPROCS=1).
func BenchmarkPlainTransport(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	p := newPair(b)
	srv := p.listen(b)
	const window = 32
	r := &countReceiver{credit: make(chan struct{}, window), per: BatchSize}
	for range window {
		r.credit <- struct{}{}
	}
	if _, err := srv.Register(cliAddr.Addr(), r); err != nil {
		b.Fatal(err)
	}
	cl := p.dial(b, cliAddr.Addr(), newChanReceiver())
	batch := make([][]byte, BatchSize)
	for i := range batch {
		batch[i] = make([]byte, 1400)
		batch[i][0] = 0x45
	}
	// Warm up until a packet arrives: the first ones can be lost while the namespaces'
	// IPv6 neighbours are resolved, and a one-iteration round would then measure that.
	warm := time.Now().Add(5 * time.Second)
	for r.n.Load() == 0 {
		if time.Now().After(warm) {
			b.Fatal("no packet got through in 5 s")
		}
		if err := cl.WritePackets(batch[:1]); err != nil {
			b.Fatal(err)
		}
		wait := time.NewTimer(10 * time.Millisecond)
		<-wait.C
	}
	r.n.Store(0)
	rx0 := srv.Stats().RxPackets
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent := 0
	refill := time.NewTimer(time.Hour)
	defer refill.Stop()
	for sent < b.N {
		refill.Reset(100 * time.Millisecond)
		select {
		case <-r.credit:
		case <-refill.C: // lost packets: go on without a credit
		}
		n := min(BatchSize, b.N-sent)
		if err := cl.WritePackets(batch[:n]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	deadline := time.After(2 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for r.n.Load() < int64(b.N) {
		select {
		case <-tick.C:
		case <-deadline:
			b.Logf("lost %d of %d packets", int64(b.N)-r.n.Load(), b.N)
			r.n.Store(int64(b.N)) // stop waiting; the rate below uses what arrived
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(srv.Stats().RxPackets-rx0)/elapsed.Seconds(), "pkts/s")
}
