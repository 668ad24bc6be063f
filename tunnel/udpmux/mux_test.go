package udpmux

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv6"
)

const testTimeout = 5 * time.Second

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// chanHandler records datagrams on a channel (copying them, as the
// Handler contract requires).
type chanHandler struct{ ch chan datagram }

func newChanHandler() *chanHandler { return &chanHandler{ch: make(chan datagram, 64)} }

func (h *chanHandler) HandleDatagram(b []byte, from netip.AddrPort) {
	h.ch <- datagram{b: bytes.Clone(b), from: from}
}

func (h *chanHandler) next(t *testing.T) datagram {
	t.Helper()
	select {
	case d := <-h.ch:
		return d
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a datagram")
		return datagram{}
	}
}

func listenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	return c
}

// waitGoroutines polls until the goroutine count drops to at most want.
func waitGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.After(testTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if n := runtime.NumGoroutine(); n <= want {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
	}
}

type muxFixture struct {
	mux       *Mux
	tsp, dtls *chanHandler
	addr      netip.AddrPort
	done      chan error
	cancel    context.CancelFunc
}

func startMux(t *testing.T, addr string, batch int) *muxFixture {
	t.Helper()
	base := runtime.NumGoroutine()
	conn := listenUDP(t, addr)
	f := &muxFixture{tsp: newChanHandler(), dtls: newChanHandler(), done: make(chan error, 1)}
	m, err := New(Config{TSP: f.tsp, DTLS: f.dtls, BatchSize: batch}, conn)
	if err != nil {
		t.Fatal(err)
	}
	f.mux = m
	f.addr = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-f.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(testTimeout):
			t.Error("Run did not return")
		}
		waitGoroutines(t, base)
	})
	return f
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want Protocol
	}{
		{"empty", nil, Junk},
		{"tsp 0xF0", []byte{0xF0, 0, 0, 1}, TSP},
		{"tsp 0xFF", []byte{0xFF}, TSP},
		{"dtls ccs 20", []byte{20, 0xfe, 0xfd}, DTLS},
		{"dtls handshake 22", []byte{22}, DTLS},
		{"dtls cid 25", []byte{25}, DTLS},
		{"below dtls 19", []byte{19}, Junk},
		{"above dtls 26", []byte{26}, Junk},
		{"ipv4 0x45", []byte{0x45}, Junk},
		{"0xEF", []byte{0xEF}, Junk},
		{"zero", []byte{0}, Junk},
		{"data record 8", []byte{8}, DTLS},
		{"7", []byte{7}, Junk},
		{"9", []byte{9}, Junk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.b); got != tt.want {
				t.Fatalf("Classify(%x) = %v, want %v", tt.b, got, tt.want)
			}
		})
	}
}

func TestMuxDispatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addr  string
		batch int
	}{
		{"v6 batch", "[::1]:0", 16},
		{"v6 single", "[::1]:0", 1},
		{"v4 batch", "127.0.0.1:0", 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startMux(t, tc.addr, tc.batch)
			client := listenUDP(t, netip.AddrPortFrom(f.addr.Addr(), 0).String())
			defer client.Close()
			caddr := client.LocalAddr().(*net.UDPAddr).AddrPort()

			send := func(b []byte) {
				t.Helper()
				if _, err := client.WriteToUDPAddrPort(b, f.addr); err != nil {
					t.Fatal(err)
				}
			}
			send([]byte{0x00, 1, 2})           // junk
			send([]byte{0x45, 0, 0, 20})       // junk (raw IPv4)
			send([]byte{})                     // empty
			send([]byte{0xF0, 0, 0, 1, 'h'})   // TSP
			send([]byte{22, 0xfe, 0xfd, 0, 0}) // DTLS

			if d := f.tsp.next(t); !bytes.Equal(d.b, []byte{0xF0, 0, 0, 1, 'h'}) || d.from != caddr {
				t.Fatalf("TSP got %x from %v, want from %v", d.b, d.from, caddr)
			}
			if d := f.dtls.next(t); !bytes.Equal(d.b, []byte{22, 0xfe, 0xfd, 0, 0}) || d.from != caddr {
				t.Fatalf("DTLS got %x from %v", d.b, d.from)
			}
			// Datagrams from one sender arrive in order on loopback, so
			// the junk before them has been counted by now.
			st := f.mux.Stats()
			if st.DroppedJunk != 2 || st.DroppedEmpty != 1 || st.TSP != 1 || st.DTLS != 1 || st.Received != 5 {
				t.Fatalf("stats = %+v", st)
			}

			// Replies go back through WriteTo.
			if err := f.mux.WriteTo([]byte("reply"), caddr); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			_ = client.SetReadDeadline(time.Now().Add(testTimeout))
			n, from, err := client.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "reply" || from.Port() != f.addr.Port() {
				t.Fatalf("reply: %q from %v err %v", buf[:n], from, err)
			}
		})
	}
}

func TestMuxTruncated(t *testing.T) {
	h := newChanHandler()
	m, to := runMux(t, "[::1]:0", Config{DTLS: h, MaxDatagram: 100, BatchSize: 4})

	client := listenUDP(t, "[::1]:0")
	defer client.Close()
	big := bytes.Repeat([]byte{23}, 101)
	if _, err := client.WriteToUDPAddrPort(big, to); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WriteToUDPAddrPort(big[:100], to); err != nil {
		t.Fatal(err)
	}
	if d := h.next(t); len(d.b) != 100 {
		t.Fatalf("got %d bytes, want the 100-byte datagram", len(d.b))
	}
	if st := m.Stats(); st.DroppedTruncated != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestMuxNoHandler(t *testing.T) {
	h := newChanHandler()
	m, to := runMux(t, "127.0.0.1:0", Config{TSP: h})
	client := listenUDP(t, "127.0.0.1:0")
	defer client.Close()
	for _, b := range [][]byte{{22, 1}, {0xF1, 2}} {
		if _, err := client.WriteToUDPAddrPort(b, to); err != nil {
			t.Fatal(err)
		}
	}
	h.next(t)
	if st := m.Stats(); st.DroppedNoHandler != 1 || st.TSP != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestMuxWriteFamilies(t *testing.T) {
	v6 := listenUDP(t, "[::1]:0")
	v4 := listenUDP(t, "127.0.0.1:0")
	m, err := New(Config{ReadBufferBytes: -1, WriteBufferBytes: -1}, v6, v4)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, peerAddr := range []string{"[::1]:0", "127.0.0.1:0"} {
		peer := listenUDP(t, peerAddr)
		to := peer.LocalAddr().(*net.UDPAddr).AddrPort()
		if err := m.WriteTo([]byte("x"), to); err != nil {
			t.Fatalf("WriteTo %v: %v", to, err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(testTimeout))
		buf := make([]byte, 8)
		if _, _, err := peer.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatalf("read at %v: %v", to, err)
		}
		peer.Close()
	}

	// A dual-stack wildcard IPv6 socket alone reaches IPv4 peers too.
	dual, err := New(Config{}, listenUDP(t, "[::]:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer dual.Close()
	peer4 := listenUDP(t, "127.0.0.1:0")
	defer peer4.Close()
	if err := dual.WriteTo([]byte("y"), peer4.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatalf("dual-stack WriteTo IPv4: %v", err)
	}
	_ = peer4.SetReadDeadline(time.Now().Add(testTimeout))
	if _, _, err := peer4.ReadFromUDPAddrPort(make([]byte, 8)); err != nil {
		t.Fatalf("IPv4 peer of dual-stack socket: %v", err)
	}

	only4, err := New(Config{}, listenUDP(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer only4.Close()
	if err := only4.WriteTo([]byte("x"), netip.MustParseAddrPort("[::1]:9")); err == nil {
		t.Fatal("IPv4-only mux wrote to an IPv6 address")
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without sockets succeeded")
	}
}

func TestMuxCloseEndsRun(t *testing.T) {
	base := runtime.NumGoroutine()
	m, err := New(Config{}, listenUDP(t, "[::1]:0"), listenUDP(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Run did not return after Close")
	}
	waitGoroutines(t, base)
	if err := m.WriteTo([]byte{1}, netip.MustParseAddrPort("[::1]:9")); err == nil {
		t.Fatal("WriteTo after Close succeeded")
	}
}

func TestSocketBuffer(t *testing.T) {
	c := listenUDP(t, "[::1]:0")
	defer c.Close()
	got, err := setSocketBuffer(c, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	// Linux reports twice the requested size; without privilege the
	// value is capped by rmem_max but is still positive.
	if got <= 0 {
		t.Fatalf("receive buffer = %d", got)
	}
}

// BenchmarkMuxDispatch measures datagrams/s through a Mux on loopback, from
// a sendmmsg sender to a counting handler; the rate counts what arrived.
func BenchmarkMuxDispatch(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(map[int]string{1: "recvfrom", 32: "recvmmsg32"}[batch], func(b *testing.B) {
			benchMux(b, batch)
		})
	}
}

func benchMux(b *testing.B, batch int) {
	h := &countHandler{}
	_, to := runMux(b, "[::1]:0", Config{DTLS: h, BatchSize: batch})
	client := listenUDP(b, "[::1]:0")
	defer client.Close()
	_, _ = setSocketBuffer(client, 8<<20, false)
	msgs := make([]ipv6.Message, 32)
	ua := net.UDPAddrFromAddrPort(to)
	for i := range msgs {
		msgs[i] = ipv6.Message{Buffers: [][]byte{bytes.Repeat([]byte{23}, 1400)}, Addr: ua}
	}
	pc := ipv6.NewPacketConn(client)
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		n, err := pc.WriteBatch(msgs[:min(len(msgs), b.N-sent)], 0)
		if err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	h.waitQuiet(int64(b.N), 200*time.Millisecond)
	b.StopTimer()
	got := h.n.Load()
	el := time.Duration(h.last.Load() - start.UnixNano())
	if got == 0 || el <= 0 {
		b.Fatal("nothing received")
	}
	b.ReportMetric(float64(got)/el.Seconds(), "pkts/s")
	b.ReportMetric(100*float64(int64(b.N)-got)/float64(b.N), "loss%")
}

// countHandler counts datagrams and remembers when the last one arrived.
type countHandler struct {
	n    atomic.Int64
	last atomic.Int64 // unix nanoseconds
}

func (h *countHandler) HandleDatagram([]byte, netip.AddrPort) {
	h.n.Add(1)
	h.last.Store(time.Now().UnixNano())
}

// waitQuiet waits until want datagrams arrived or none arrived for quiet.
func (h *countHandler) waitQuiet(want int64, quiet time.Duration) {
	tick := time.NewTicker(quiet / 4)
	defer tick.Stop()
	prev, still := int64(-1), time.Duration(0)
	for range tick.C {
		n := h.n.Load()
		if n >= want {
			return
		}
		if n != prev {
			prev, still = n, 0
			continue
		}
		if still += quiet / 4; still >= quiet {
			return
		}
	}
}

// runMux runs a Mux with cfg on a socket at addr until the test ends and returns it with the
// socket's address.
func runMux(tb testing.TB, addr string, cfg Config) (*Mux, netip.AddrPort) {
	tb.Helper()
	conn := listenUDP(tb, addr)
	m, err := New(cfg, conn)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	return m, conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// batchHandler records what a BatchHandler is told, in order.
type batchHandler struct{ ev chan string }

func (h *batchHandler) HandleDatagram(b []byte, _ netip.AddrPort) { h.ev <- "single " + string(b) }
func (h *batchHandler) HandleBatchDatagram(b []byte, _ netip.AddrPort) {
	h.ev <- "batch " + string(b)
}
func (h *batchHandler) EndBatch() { h.ev <- "end" }

// A BatchHandler gets the datagrams of a batched read through HandleBatchDatagram, each batch
// followed by EndBatch before the next read; read one at a time, through HandleDatagram.
func TestMuxBatchHandler(t *testing.T) {
	for _, tc := range []struct {
		batch int
		want  string
	}{{8, "batch"}, {1, "single"}} {
		t.Run(fmt.Sprint(tc.batch), func(t *testing.T) {
			h := &batchHandler{ev: make(chan string, 64)}
			_, to := runMux(t, "[::1]:0", Config{DTLS: h, BatchSize: tc.batch})
			client := listenUDP(t, "[::1]:0")
			defer client.Close()
			for _, b := range []string{"\x08a", "\x17b", "\x08c"} {
				if _, err := client.WriteToUDPAddrPort([]byte(b), to); err != nil {
					t.Fatal(err)
				}
			}
			got, open := 0, false
			for got < 3 || open {
				select {
				case e := <-h.ev:
					switch {
					case e == "end":
						if tc.want == "single" || !open {
							t.Fatalf("EndBatch without datagrams before it (%s)", tc.want)
						}
						open = false
					case strings.HasPrefix(e, tc.want+" "):
						got++
						open = tc.want == "batch"
					default:
						t.Fatalf("unexpected %q", e)
					}
				case <-time.After(testTimeout):
					t.Fatalf("%d datagrams, batch open %v", got, open)
				}
			}
		})
	}
}

// WriteBatch delivers every datagram, in order, with one and with several system calls, to
// IPv6 and IPv4 destinations.
func TestMuxWriteBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
		n    int
	}{
		{"v6 one", "[::1]:0", 1},
		{"v6 150", "[::1]:0", 150}, // more than MaxWriteBatch
		{"v4 100", "127.0.0.1:0", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startMux(t, tc.addr, 8)
			client := listenUDP(t, netip.AddrPortFrom(f.addr.Addr(), 0).String())
			defer client.Close()
			bufs := make([][]byte, tc.n)
			for i := range bufs {
				bufs[i] = []byte(fmt.Sprintf("datagram %d", i))
			}
			if err := f.mux.WriteBatch(bufs, client.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			_ = client.SetReadDeadline(time.Now().Add(testTimeout))
			for i := range tc.n {
				n, _, err := client.ReadFromUDPAddrPort(buf)
				if err != nil || string(buf[:n]) != string(bufs[i]) {
					t.Fatalf("datagram %d: %q %v", i, buf[:n], err)
				}
			}
		})
	}
}

// Datagrams next to each other in one array go out as one GSO send where the kernel can; the
// receiver still gets them one by one, in order, the shorter last one included.
func TestBatchWriterSegments(t *testing.T) {
	for _, addr := range []string{"[::1]:0", "127.0.0.1:0"} {
		t.Run(addr, func(t *testing.T) {
			src := listenUDP(t, addr)
			defer src.Close()
			dst := listenUDP(t, addr)
			defer dst.Close()
			w := NewBatchWriter(src)
			const n, size = 100, 1200
			slab := make([]byte, n*size)
			var bufs [][]byte
			for i := range n {
				b := slab[i*size : (i+1)*size]
				if i == n-1 {
					b = b[:size/2]
				}
				copy(b, fmt.Sprintf("datagram %03d", i))
				bufs = append(bufs, b)
			}
			bufs = append(bufs, []byte("apart")) // not adjacent: a datagram of its own
			if err := w.WriteBatch(bufs, dst.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 65536)
			_ = dst.SetReadDeadline(time.Now().Add(testTimeout))
			for i, want := range bufs {
				k, _, err := dst.ReadFromUDPAddrPort(buf)
				if err != nil || !bytes.Equal(buf[:k], want) {
					t.Fatalf("datagram %d: %d bytes %q…, want %d: %v", i, k, buf[:min(k, 12)], len(want), err)
				}
			}
			t.Logf("gso: %v", w.gso.Load())
		})
	}
}

// Datagrams the kernel coalesced (UDP GRO, here from a GSO send) reach the handler one by one,
// in order.
func TestMuxSplitsCoalesced(t *testing.T) {
	f := startMux(t, "[::1]:0", 8)
	src := listenUDP(t, "[::1]:0")
	defer src.Close()
	const n, size = 40, 1000
	slab := make([]byte, n*size)
	var bufs [][]byte
	for i := range n {
		b := slab[i*size : (i+1)*size]
		b[0] = 22 // DTLS
		copy(b[1:], fmt.Sprintf("datagram %03d", i))
		bufs = append(bufs, b)
	}
	if err := NewBatchWriter(src).WriteBatch(bufs, f.addr); err != nil {
		t.Fatal(err)
	}
	for i, want := range bufs {
		if d := f.dtls.next(t); !bytes.Equal(d.b, want) {
			t.Fatalf("datagram %d: %d bytes %q…", i, len(d.b), d.b[:min(len(d.b), 13)])
		}
	}
	st := f.mux.Stats()
	if st.DTLS != n {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("coalesced reads: %d", st.Coalesced)
}
