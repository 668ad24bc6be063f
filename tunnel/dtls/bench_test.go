package dtls

import (
	"bytes"
	"crypto/tls"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dstmgw/dstm/internal/limit"
)

// countReceiver counts packets and remembers when the last one arrived.
type countReceiver struct {
	n, bytes atomic.Int64
	last     atomic.Int64 // unix nanoseconds
}

func (r *countReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		r.receive(p)
	}
}

func (r *countReceiver) receive(pkt []byte) {
	r.n.Add(1)
	r.bytes.Add(int64(len(pkt)))
	r.last.Store(time.Now().UnixNano())
}

// waitQuiet waits until want packets arrived or nothing arrived for quiet.
func (r *countReceiver) waitQuiet(want int64, quiet time.Duration) {
	tick := time.NewTicker(quiet / 4)
	defer tick.Stop()
	prev, still := int64(-1), time.Duration(0)
	for range tick.C {
		n := r.n.Load()
		if n >= want {
			return
		}
		if n == prev {
			if still += quiet / 4; still >= quiet {
				return
			}
		} else {
			prev, still = n, 0
		}
	}
}

// BenchmarkDTLSLink measures one direction (client → server) of a bound
// DTLS link through a real udpmux on loopback, 1400-byte packets: in data
// records (data) and in pion's DTLS records (dtls). It reports received
// packets/s, MB/s and loss.
func BenchmarkDTLSLink(b *testing.B) {
	b.Run("data", func(b *testing.B) { benchDTLSLink(b, true) })
	b.Run("dtls", func(b *testing.B) { benchDTLSLink(b, false) })
}

func benchDTLSLink(b *testing.B, data bool) {
	f := newFixture(b, func(c *ServerConfig) { c.QueueLen = 1024 })
	token, _ := f.gw.addSession("bench@corp")
	recv := &countReceiver{}
	f.gw.recvOverride = recv
	cfg := f.clientConfig(b, "bench@corp", token)
	cfg.NoDataRecords = !data
	cl, err := f.dial(b, listenUDP(b), cfg, newChanReceiver())
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	f.nextLink(b)
	if data {
		waitFor(b, "data records", func() bool { return cl.Stats().DataRecords })
	}
	pkt := [][]byte{ipv4Packet(1400, 1)}
	b.SetBytes(1400)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := cl.WritePackets(pkt); err != nil {
			b.Fatal(err)
		}
	}
	recv.waitQuiet(int64(b.N), 300*time.Millisecond)
	b.StopTimer()
	got := recv.n.Load()
	el := time.Duration(recv.last.Load() - start.UnixNano())
	if got == 0 || el <= 0 {
		b.Fatal("nothing received")
	}
	b.ReportMetric(float64(got)/el.Seconds(), "pkts/s")
	b.ReportMetric(float64(recv.bytes.Load())/el.Seconds()/1e6, "MB/s")
	b.ReportMetric(100*float64(int64(b.N)-got)/float64(b.N), "loss%")
}

// BenchmarkHandleDatagramHello measures the stateless front on one ClientHello from an
// address with no peer (pion's first ClientHello, as captured): answered with a
// HelloVerifyRequest (reply limits lifted), refused by the per-source reply limit, carrying a
// forged cookie (checked, then answered), and not parsing.
func BenchmarkHandleDatagramHello(b *testing.B) {
	hello, _ := capturedHellos(b)
	forged := withCookie(b, hello, append([]byte{0}, bytes.Repeat([]byte{1}, cookieMACLen)...)) // generation 0: MAC checked
	ca := newTestCA(b, "bench root")
	var sent atomic.Int64
	srv, err := NewServer(ServerConfig{
		Certificates: []tls.Certificate{ca.issue(b, "gw.test", true)},
		ClientCAs:    ca.pool,
		Bind:         (&gateway{}).bind,
		Write:        func([]byte, netip.AddrPort) error { sent.Add(1); return nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	limited := srv.replies
	unlimited := &replyLimits{sources: limit.NewSourceRate(1e15, 1e15, helloBuckets, nil), all: limit.NewTokenBucket(1e15, 1e15, nil)}
	from := netip.MustParseAddrPort("[2001:db8::1]:4000")
	for _, bc := range []struct {
		name    string
		b       []byte
		replies *replyLimits
	}{
		{"answered", hello, unlimited},
		{"rate-limited", hello, limited},
		{"forged cookie", forged, unlimited},
		{"malformed", dtlsRecord(22, 0, nil, []byte{1, 0, 0, 0}), unlimited},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv.replies = bc.replies
			base := runtime.NumGoroutine()
			sent.Store(0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				srv.HandleDatagram(bc.b, netip.AddrPortFrom(from.Addr(), uint16(i)))
			}
			b.StopTimer()
			if st := srv.Stats(); st.Sessions != 0 || runtime.NumGoroutine() > base {
				b.Fatalf("peers made: %+v", st)
			}
			b.ReportMetric(float64(sent.Load())/float64(b.N), "replies/op")
		})
	}
}
