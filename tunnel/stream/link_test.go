package stream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

const testTimeout = 5 * time.Second

// chanReceiver records packets (copied, per the Receiver contract).
type chanReceiver struct{ ch chan []byte }

func newChanReceiver() *chanReceiver { return &chanReceiver{ch: make(chan []byte, 1024)} }

func (r *chanReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		r.receive(p)
	}
}

func (r *chanReceiver) receive(pkt []byte) { r.ch <- bytes.Clone(pkt) }

func (r *chanReceiver) next(t *testing.T) []byte {
	t.Helper()
	select {
	case p := <-r.ch:
		return p
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a packet")
		return nil
	}
}

// ipv4Packet returns an n-byte packet that looks like IPv4.
func ipv4Packet(n int, fill byte) []byte {
	p := bytes.Repeat([]byte{fill}, n)
	p[0] = 0x45
	return p
}

func waitGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.After(testTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > want {
		select {
		case <-tick.C:
		case <-deadline:
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
	}
}

func runLink(t *testing.T, l *Link) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- l.Run(context.Background()) }()
	return errc
}

func waitErr(t *testing.T, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(testTimeout):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestRoundTrip(t *testing.T) {
	base := runtime.NumGoroutine()
	c1, c2 := net.Pipe()
	r1, r2 := newChanReceiver(), newChanReceiver()
	l1 := New(c1, r1, Options{MTU: 1500})
	l2 := New(c2, r2, Options{MTU: 1500})
	e1, e2 := runLink(t, l1), runLink(t, l2)

	sizes := []int{20, 21, 576, 1400, 1500}
	var pkts [][]byte
	for i, n := range sizes {
		pkts = append(pkts, ipv4Packet(n, byte(i+1)))
	}
	if err := l1.WritePackets(pkts); err != nil {
		t.Fatal(err)
	}
	if err := l2.WritePackets(pkts[:2]); err != nil {
		t.Fatal(err)
	}
	for _, want := range pkts {
		if got := r2.next(t); !bytes.Equal(got, want) {
			t.Fatalf("l1→l2: got %d bytes, want %d", len(got), len(want))
		}
	}
	for _, want := range pkts[:2] {
		if got := r1.next(t); !bytes.Equal(got, want) {
			t.Fatalf("l2→l1: got %x, want %x", got, want)
		}
	}
	if st := l1.Stats(); st.PacketsOut != 5 || st.PacketsIn != 2 {
		t.Fatalf("l1 stats %+v", st)
	}
	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, e1); err != nil {
		t.Fatalf("Run after Close = %v", err)
	}
	if err := waitErr(t, e2); err != nil {
		t.Fatalf("peer Run after EOF = %v", err)
	}
	if err := l1.WritePackets(pkts); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close = %v", err)
	}
	waitGoroutines(t, base)
}

func TestReceiveRejects(t *testing.T) {
	tests := []struct {
		name string
		wire []byte
		want error
	}{
		{"too short", []byte{0, 19}, ErrFrameTooShort},
		{"one byte", []byte{0, 1, 0x45}, ErrFrameTooShort},
		{"oversize", append([]byte{0x05, 0xDD}, ipv4Packet(1501, 1)...), ErrFrameTooLarge},
		{"max length", []byte{0xFF, 0xFF}, ErrFrameTooLarge},
		{"ipv6 inside", append([]byte{0, 40}, bytes.Repeat([]byte{0x60}, 40)...), ErrNotIPv4},
		{"garbage after good frame", append(AppendFrame(nil, ipv4Packet(20, 1)), 0x00, 0x30, 0x60), ErrNotIPv4},
		{"control frame without a handler", AppendControl(nil, []byte("VERSION=2.0.2\r\n")), ErrNotIPv4},
		{"eof mid frame", append([]byte{0, 40}, ipv4Packet(30, 1)...), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			c1, c2 := net.Pipe()
			l := New(c1, newChanReceiver(), Options{MTU: 1400})
			errc := runLink(t, l)
			go func() {
				_, _ = c2.Write(tt.wire)
				_ = c2.Close()
			}()
			if err := waitErr(t, errc); !errors.Is(err, tt.want) {
				t.Fatalf("Run = %v, want %v", err, tt.want)
			}
			if !errors.Is(l.Err(), tt.want) {
				t.Fatalf("Err = %v", l.Err())
			}
			waitGoroutines(t, base)
		})
	}
}

func TestAcceptsSlackAndKeepalive(t *testing.T) {
	c1, c2 := net.Pipe()
	r := newChanReceiver()
	l := New(c1, r, Options{MTU: 1400})
	errc := runLink(t, l)
	wire := AppendFrame(nil, nil)
	wire = AppendFrame(wire, ipv4Packet(1400+ReceiveSlack, 7))
	wire = AppendFrame(wire, nil)
	go func() { _, _ = c2.Write(wire); _ = c2.Close() }()
	if got := r.next(t); len(got) != 1400+ReceiveSlack {
		t.Fatalf("got %d bytes", len(got))
	}
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.KeepalivesIn != 2 || st.PacketsIn != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWriteDrops(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c2.Close()
	// Nobody reads c2, so the first flush blocks and the queue fills.
	l := New(c1, newChanReceiver(), Options{MTU: 100, QueueBytes: 1000})
	defer l.Close()
	errc := runLink(t, l)
	if err := l.WritePackets([][]byte{nil, ipv4Packet(101, 1)}); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		if err := l.WritePackets([][]byte{ipv4Packet(100, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	st := l.Stats()
	if st.DroppedOversize != 2 {
		t.Fatalf("oversize drops %+v", st)
	}
	// At most one queue's worth is in flight and one is pending.
	if st.DroppedQueueFull == 0 || st.PacketsOut > 2*1000/102+1 {
		t.Fatalf("queue drops %+v", st)
	}
	_ = l.Close()
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
}

func TestKeepaliveSent(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c2.Close()
	l := New(c1, newChanReceiver(), Options{KeepaliveInterval: 10 * time.Millisecond})
	errc := runLink(t, l)
	_ = c2.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c2, buf); err != nil || buf[0] != 0 || buf[1] != 0 {
		t.Fatalf("keepalive frame %x, %v", buf, err)
	}
	_ = l.Close()
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
}

func TestIdleTimeout(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c2.Close()
	l := New(c1, newChanReceiver(), Options{IdleTimeout: 20 * time.Millisecond})
	errc := runLink(t, l)
	err := waitErr(t, errc)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Run = %v, want a timeout", err)
	}
}

func TestContextEndsRun(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c2.Close()
	l := New(c1, newChanReceiver(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.Run(ctx) }()
	cancel()
	if err := waitErr(t, errc); err != nil {
		t.Fatalf("Run = %v", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed")
	}
}

func TestParseFrameIncomplete(t *testing.T) {
	full := AppendFrame(nil, ipv4Packet(40, 3))
	for i := range len(full) {
		pkt, n, err := ParseFrame(full[:i], 1500)
		if pkt != nil || n != 0 || err != nil {
			t.Fatalf("prefix %d: %x %d %v", i, pkt, n, err)
		}
	}
	pkt, n, err := ParseFrame(full, 1500)
	if err != nil || n != len(full) || !bytes.Equal(pkt, full[2:]) {
		t.Fatalf("full: %d %v", n, err)
	}
}

func TestPrefixConnKeepsBufferedFrames(t *testing.T) {
	c1, c2 := net.Pipe()
	first := AppendFrame(nil, ipv4Packet(20, 1))
	second := AppendFrame(nil, ipv4Packet(30, 2))
	go func() {
		_, _ = c2.Write(append([]byte("ACCEPT\r\n"), first...))
		_, _ = c2.Write(second)
		_ = c2.Close()
	}()
	// The control plane reads its line through a buffered reader that
	// also swallowed the first frame.
	br := bufio.NewReaderSize(c1, 64)
	if line, err := br.ReadString('\n'); err != nil || line != "ACCEPT\r\n" {
		t.Fatalf("control line %q %v", line, err)
	}
	rest, _ := br.Peek(br.Buffered())
	r := newChanReceiver()
	l := New(PrefixConn(c1, rest), r, Options{})
	errc := runLink(t, l)
	if got := r.next(t); len(got) != 20 || got[1] != 1 {
		t.Fatalf("first packet %x", got)
	}
	if got := r.next(t); len(got) != 30 || got[1] != 2 {
		t.Fatalf("second packet %x", got)
	}
	if err := waitErr(t, errc); err != nil {
		t.Fatal(err)
	}
}

// controlRecorder collects control messages.
type controlRecorder struct{ got chan []byte }

func (c controlRecorder) handle(msg []byte) { c.got <- append([]byte(nil), msg...) }

func TestControlFramesInterleaveWithPackets(t *testing.T) {
	a, b := net.Pipe()
	recvA, recvB := newChanReceiver(), newChanReceiver()
	ctlB := controlRecorder{got: make(chan []byte, 4)}
	la := New(a, recvA, Options{MTU: 1400})
	lb := New(b, recvB, Options{MTU: 1400, Control: ctlB.handle})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go la.Run(ctx)
	go lb.Run(ctx)
	pkt := ipv4Packet(60, 7)
	msg := []byte("Content-length: 35\r\n<tunnel action=\"accept\"></tunnel>\r\n")
	if err := la.WritePackets([][]byte{pkt}); err != nil {
		t.Fatal(err)
	}
	if err := la.WriteControl(msg); err != nil {
		t.Fatal(err)
	}
	if err := la.WritePackets([][]byte{pkt}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ctlB.got:
		if !bytes.Equal(got, msg) {
			t.Fatalf("control message %q, want %q", got, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("control message not delivered")
	}
	for range 2 {
		if got := recvB.next(t); !bytes.Equal(got, pkt) {
			t.Fatalf("packet %x, want %x", got, pkt)
		}
	}
	if err := la.WriteControl(nil); err == nil {
		t.Fatal("empty control message accepted")
	}
}

// TestFramesAcrossBufferGrowth: the read buffer starts with room for two frames and grows
// when a read fills it, also while it holds the start of a frame not yet complete. The peer
// writes raw chunks (net.Pipe hands each read as much of a write as fits): one whole frame and
// the start of the next, then the rest of a long batch, which fills the small buffer and
// makes it grow with a partial frame after a consumed one.
func TestFramesAcrossBufferGrowth(t *testing.T) {
	c1, c2 := net.Pipe()
	r2 := newChanReceiver()
	l2 := New(c2, r2, Options{MTU: 1500})
	e2 := runLink(t, l2)
	sizes := []int{100, 1500, 21, 1499, 576, 1400, 40, 1500, 1500, 1500}
	var pkts [][]byte
	var wire []byte
	for i := range 60 {
		p := ipv4Packet(sizes[i%len(sizes)], byte(i))
		pkts = append(pkts, p)
		wire = AppendFrame(wire, p)
	}
	first := HeaderLen + sizes[0] + 50 // frame 0 and the first 50 bytes of frame 1
	for _, chunk := range [][]byte{wire[:first], wire[first:]} {
		if _, err := c1.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if len(chunk) == first {
			if got := r2.next(t); !bytes.Equal(got, pkts[0]) {
				t.Fatalf("packet 0: got %d bytes, want %d", len(got), len(pkts[0]))
			}
		}
	}
	for i, want := range pkts[1:] {
		if got := r2.next(t); !bytes.Equal(got, want) {
			t.Fatalf("packet %d: got %d bytes (fill %d), want %d (fill %d)", i+1, len(got), got[1], len(want), want[1])
		}
	}
	c1.Close()
	if err := waitErr(t, e2); err != nil {
		t.Fatal(err)
	}
}

// eventLog records, in order, the batches a link hands to its receiver and its control messages.
type eventLog struct{ ev chan string }

func (e eventLog) ReceivePackets(pkts [][]byte) {
	var s []string
	for _, p := range pkts {
		s = append(s, string(p[1:2]))
	}
	e.ev <- "packets " + strings.Join(s, ",")
}

func (e eventLog) control(msg []byte) { e.ev <- "control " + string(msg) }

// TestBatchesAroundControlFrames: the packets of one read reach the receiver in one batch,
// and a control frame splits the batch so that what came before it is delivered first.
func TestBatchesAroundControlFrames(t *testing.T) {
	a, b := net.Pipe()
	log := eventLog{ev: make(chan string, 8)}
	l := New(b, log, Options{MTU: 1400, Control: log.control})
	errc := runLink(t, l)
	pkt := func(tag byte) []byte { p := ipv4Packet(40, 0); p[1] = tag; return p }
	var raw []byte
	raw = AppendFrame(raw, pkt('1'))
	raw = AppendFrame(raw, pkt('2'))
	raw = AppendControl(raw, []byte("msg"))
	raw = AppendFrame(raw, pkt('3'))
	go func() { _, _ = a.Write(raw) }()
	for _, want := range []string{"packets 1,2", "control msg", "packets 3"} {
		select {
		case got := <-log.ev:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(testTimeout):
			t.Fatalf("timed out waiting for %q", want)
		}
	}
	a.Close()
	if err := waitErr(t, errc); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestWriterOnlyWhileBusy: the writer goroutine runs while there is something to write and
// leaves an idle link (writerLinger later); a later write starts one again.
func TestWriterOnlyWhileBusy(t *testing.T) {
	a, b := net.Pipe()
	recvB := newChanReceiver()
	la := New(a, newChanReceiver(), Options{MTU: 1400})
	lb := New(b, recvB, Options{MTU: 1400})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go la.Run(ctx)
	go lb.Run(ctx)
	writing := func() bool {
		la.mu.Lock()
		defer la.mu.Unlock()
		return la.writing
	}
	for round := range 2 {
		burst := make([][]byte, 20)
		for i := range burst {
			burst[i] = ipv4Packet(1000, byte(round))
		}
		for range 3 { // several flushes: each swaps the pending and spare buffers
			if err := la.WritePackets(burst); err != nil {
				t.Fatal(err)
			}
			for range burst {
				recvB.next(t)
			}
		}
		deadline := time.After(writerLinger + testTimeout)
		for writing() {
			select {
			case <-deadline:
				t.Fatalf("round %d: the writer stays on an idle link", round)
			case <-time.After(50 * time.Millisecond):
			}
		}
		la.mu.Lock()
		held := cap(la.pending) + cap(la.spare)
		la.mu.Unlock()
		if held != 0 {
			t.Fatalf("round %d: the idle link holds %d bytes of write buffers", round, held)
		}
	}
}

// TestReadBufferShrinksWhenIdle: a burst grows the reader's buffer; once nothing comes for
// readShrinkIdle it is small again, and the link goes on (the shrink is no idle timeout).
func TestReadBufferShrinksWhenIdle(t *testing.T) {
	for _, idle := range []time.Duration{0, time.Minute} {
		t.Run(fmt.Sprint("IdleTimeout ", idle), func(t *testing.T) {
			a, b := net.Pipe()
			recvB := newChanReceiver()
			la := New(a, newChanReceiver(), Options{MTU: 1400})
			lb := New(b, recvB, Options{MTU: 1400, IdleTimeout: idle})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go la.Run(ctx)
			go lb.Run(ctx)
			burst := make([][]byte, 30)
			for i := range burst {
				burst[i] = ipv4Packet(1400, byte(i))
			}
			if err := la.WritePackets(burst); err != nil {
				t.Fatal(err)
			}
			for range burst {
				recvB.next(t)
			}
			if got := lb.readBuf.Load(); got != readBufMax {
				t.Fatalf("read buffer %d bytes after a burst, want %d", got, readBufMax)
			}
			small := int64(readBufIdle)
			deadline := time.After(readShrinkIdle + testTimeout)
			for lb.readBuf.Load() != small {
				select {
				case <-deadline:
					t.Fatalf("read buffer still %d bytes on an idle link, want %d", lb.readBuf.Load(), small)
				case <-time.After(50 * time.Millisecond):
				}
			}
			select {
			case <-lb.Done():
				t.Fatalf("the link ended: %v", lb.Err())
			default:
			}
			if err := la.WritePackets([][]byte{ipv4Packet(100, 7)}); err != nil {
				t.Fatal(err)
			}
			if p := recvB.next(t); p[1] != 7 {
				t.Fatalf("packet %d after the shrink, want 7", p[1])
			}
		})
	}
}
