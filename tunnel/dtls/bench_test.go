package dtls

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
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

// orderReceiver counts packets and checks that each client's arrive in the order sent: byte
// 20 is the client, bytes 21–28 its sequence number.
type orderReceiver struct {
	n, reordered atomic.Int64
	last         [8]atomic.Uint64 // per client: highest sequence number + 1
	lastAt       atomic.Int64     // unix nanoseconds of the latest packet
}

func (r *orderReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		c, seq := p[20]%8, binary.BigEndian.Uint64(p[21:29])
		if prev := r.last[c].Load(); seq+1 <= prev {
			r.reordered.Add(1)
		} else {
			r.last[c].Store(seq + 1)
		}
		r.n.Add(1)
	}
	r.lastAt.Store(time.Now().UnixNano())
}

// BenchmarkDTLSLinkParallel: clients send at once (data records, client → server, 1400-byte
// packets) to a server port on one socket or GOMAXPROCS (SO_REUSEPORT, as the gateway's). It
// reports the aggregate pkts/s, loss and packets of one client that arrived out of order.
func BenchmarkDTLSLinkParallel(b *testing.B) {
	n := runtime.GOMAXPROCS(0)
	for _, tc := range []struct{ clients, sockets int }{{1, n}, {4, 1}, {4, n}} {
		clients := tc.clients
		b.Run(fmt.Sprintf("clients=%d/sockets=%d", clients, tc.sockets), func(b *testing.B) {
			f := newFixtureSockets(b, func(c *ServerConfig) { c.QueueLen = 1024 }, tc.sockets)
			recv := &orderReceiver{}
			f.gw.recvOverride = recv
			links := make([]*ClientLink, clients)
			for i := range links {
				id := fmt.Sprintf("bench%d@corp", i)
				token, _ := f.gw.addSession(id)
				cl, err := f.dial(b, listenUDP(b), f.clientConfig(b, id, token), newChanReceiver())
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				f.nextLink(b)
				waitFor(b, "data records", func() bool { return cl.Stats().DataRecords })
				links[i] = cl
			}
			per := max(1, b.N/clients)
			b.SetBytes(1400)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, cl := range links {
				wg.Add(1)
				go func() {
					defer wg.Done()
					batch := make([][]byte, 16)
					for j := range batch {
						batch[j] = ipv4Packet(1400, 0)
						batch[j][20] = byte(i)
					}
					for seq := 0; seq < per; seq += len(batch) {
						for j, p := range batch {
							binary.BigEndian.PutUint64(p[21:29], uint64(seq+j))
						}
						if err := cl.WritePackets(batch); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			sent := int64(clients * ((per + 15) / 16 * 16))
			tick := time.NewTicker(200 * time.Millisecond) // until all arrived, or none for a tick
			for prev := int64(-1); ; {
				<-tick.C
				n := recv.n.Load()
				if n >= sent || n == prev {
					break
				}
				prev = n
			}
			tick.Stop()
			b.StopTimer()
			got := recv.n.Load()
			el := time.Duration(recv.lastAt.Load() - start.UnixNano())
			if got == 0 || el <= 0 {
				b.Fatal("nothing received")
			}
			b.ReportMetric(float64(got)/el.Seconds(), "pkts/s")
			b.ReportMetric(100*float64(sent-got)/float64(sent), "loss%")
			b.ReportMetric(float64(recv.reordered.Load()), "reordered")
		})
	}
}
