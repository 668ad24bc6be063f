package tep

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

// fakeTUN is an in-memory tun.Device: tests push packets to In (what the
// kernel would route to the device) and read what the TEP wrote from Out.
type fakeTUN struct {
	In      chan []byte
	Out     chan []byte
	closed  chan struct{}
	once    sync.Once
	batch   int
	discard bool // count writes instead of copying them (allocation tests)
	written atomic.Uint64
}

var _ tun.Device = (*fakeTUN)(nil)

func newFakeTUN(batch int) *fakeTUN {
	return &fakeTUN{In: make(chan []byte, 256), Out: make(chan []byte, 4096), closed: make(chan struct{}), batch: batch}
}

func (f *fakeTUN) File() *os.File { return nil }

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var p []byte
	select {
	case p = <-f.In:
	case <-f.closed:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], p)
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case p = <-f.In:
		default:
			return n, nil
		}
	}
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-f.closed:
		return 0, os.ErrClosed
	default:
	}
	for _, b := range bufs {
		if offset < 10 {
			panic("offset below virtio header length")
		}
		f.written.Add(1)
		if f.discard {
			continue
		}
		select {
		case f.Out <- append([]byte(nil), b[offset:]...):
		case <-f.closed:
			return 0, os.ErrClosed
		}
	}
	return len(bufs), nil
}

func (f *fakeTUN) MTU() (int, error)        { return DefaultMTU, nil }
func (f *fakeTUN) Name() (string, error)    { return "dstmfake", nil }
func (f *fakeTUN) Events() <-chan tun.Event { return nil }
func (f *fakeTUN) BatchSize() int           { return f.batch }
func (f *fakeTUN) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// fakeLink records what the TEP sends into the tunnel.
type fakeLink struct {
	out       chan []byte
	transport string
	block     chan struct{} // when non-nil, WritePackets waits for it
	entered   chan struct{} // when non-nil, signalled before waiting for block
	closed    atomic.Bool
	discard   bool
	count     atomic.Uint64
	notify    chan struct{} // when non-nil, signalled after every batch
	direct    bool          // WritesDirect's answer
	done      chan struct{}
	closeOnce sync.Once
}

var _ tunnel.Link = (*fakeLink)(nil)

func newFakeLink(transport string) *fakeLink {
	return &fakeLink{out: make(chan []byte, 4096), transport: transport, done: make(chan struct{})}
}

func (l *fakeLink) WritePackets(pkts [][]byte) error {
	if l.closed.Load() {
		return net.ErrClosed
	}
	if l.block != nil {
		select {
		case l.entered <- struct{}{}:
		default:
		}
		<-l.block
	}
	l.count.Add(uint64(len(pkts)))
	if l.notify != nil {
		l.notify <- struct{}{}
	}
	if l.discard {
		return nil
	}
	for _, p := range pkts {
		l.out <- append([]byte(nil), p...)
	}
	return nil
}

func (l *fakeLink) WritesDirect() bool { return l.direct }

func (l *fakeLink) Close() error {
	l.closed.Store(true)
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}
func (l *fakeLink) Done() <-chan struct{} { return l.done }
func (l *fakeLink) Transport() string     { return l.transport }
func (l *fakeLink) Endpoint() netip.AddrPort {
	return netip.MustParseAddrPort("[2001:db8::2]:0")
}

func recv(t *testing.T, c chan []byte, what string) []byte {
	t.Helper()
	select {
	case p := <-c:
		return p
	case <-time.After(5 * time.Second):
		t.Fatalf("timeout waiting for %s", what)
		return nil
	}
}

func expectNone(t *testing.T, c chan []byte, what string) {
	t.Helper()
	select {
	case p := <-c:
		t.Fatalf("unexpected %s: % x", what, p[:min(len(p), 28)])
	case <-time.After(50 * time.Millisecond):
	}
}

// ipv4 builds a valid IPv4 packet of total length size with the given
// protocol; for TCP it is a SYN with an MSS option and a valid checksum.
func ipv4(src, dst netip.Addr, proto uint8, size int, df bool, mss uint16) []byte {
	p := make([]byte, size)
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:4], uint16(size))
	if df {
		p[6] = 0x40
	}
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	packet.SetHeaderChecksum(p)
	if proto == packet.ProtoTCP {
		tcp := p[20:]
		tcp[12], tcp[13] = 6<<4, 0x02
		tcp[20], tcp[21] = 2, 4
		binary.BigEndian.PutUint16(tcp[22:24], mss)
		binary.BigEndian.PutUint16(tcp[16:18], packet.Checksum(tcp, packet.PseudoHeaderSum(p, len(tcp))))
	}
	return p
}

func tcpMSS(p []byte) uint16 { return binary.BigEndian.Uint16(p[20+22 : 20+24]) }

func tcpValid(p []byte) bool {
	tcp := p[packet.HeaderLength(p):packet.TotalLen(p)]
	return packet.Checksum(tcp, packet.PseudoHeaderSum(p, len(tcp))) == 0
}
