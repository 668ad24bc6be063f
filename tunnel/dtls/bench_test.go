package dtls

import (
	"sync/atomic"
	"testing"
	"time"
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
// DTLS link through a real udpmux on loopback, 1400-byte packets, one
// record each. It reports received packets/s, MB/s and loss.
func BenchmarkDTLSLink(b *testing.B) {
	f := newFixture(b, func(c *ServerConfig) { c.QueueLen = 1024 })
	token, _ := f.gw.addSession("bench@corp")
	recv := &countReceiver{}
	f.gw.recvOverride = recv
	cl, err := f.dial(b, listenUDP(b), f.clientConfig(b, "bench@corp", token), newChanReceiver())
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	f.nextLink(b)
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
