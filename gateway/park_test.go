package gateway_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/stream"
	"github.com/dstmgw/dstm/tunnel/tlsrec"
)

// TestIdleSessionsPark: the readers of idle established sessions park (no goroutine each):
// a TSP session on TCP at once, a TLS stream on the taken-over records after a second
// without traffic. A crypto/tls stream (tsp/2) keeps its reader. A parked session carries
// traffic both ways and parks again, and one whose client leaves ends as before.
func TestIdleSessionsPark(t *testing.T) {
	gw := startGateway(t, nil)
	parked := func(want int, what string) {
		t.Helper()
		eventually(t, what, func() (bool, error) { return gw.g.Dataplane().ParkedReaders == want, nil })
	}
	c := gw.dialTCPFrom(t, netip.MustParseAddr("127.1.0.1"))
	m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := streamSession(c, m); err != nil || m.State() != tsp.ClientEstablished {
		t.Fatalf("TSP session on TCP: %v (state %v)", err, m.State())
	}
	tcpLease := m.Offer().Client.IPv4
	parked(1, "the TCP session parked")

	st := gw.enrollIdentity(t, "alice@example.com")
	rec := openTLSTunnelProto(t, gw, st, defPool, tlsrec.ALPN)
	old := openTLSTunnelProto(t, gw, gw.enrollIdentity(t, "bob@example.com"), defPool, "tsp/2")
	parked(2, "the TLS stream on taken-over records parked")

	for round := range 2 {
		good := tuntest.Ping(outside, rec.lease)
		rec.send(t, stream.AppendFrame(nil, good))
		if p := gw.fromGateway(t); !bytes.Equal(p, good) {
			t.Fatalf("round %d: packet from the parked stream not forwarded", round)
		}
		in := tuntest.Ping(rec.lease, outside)
		select {
		case gw.tun.Outbound <- in:
		case <-time.After(waitTimeout):
			t.Fatal("gateway does not read its TUN device")
		}
		if pkt, control := rec.readFrame(t); control || !bytes.Equal(pkt, in) {
			t.Fatalf("round %d: got frame %x (control %v), want the injected packet", round, pkt, control)
		}
		parked(2, "the TLS stream parked again")
	}
	// The crypto/tls stream still works with its reader.
	good := tuntest.Ping(outside, old.lease)
	old.send(t, stream.AppendFrame(nil, good))
	if p := gw.fromGateway(t); !bytes.Equal(p, good) {
		t.Fatal("packet from the tsp/2 stream not forwarded")
	}

	c.Close()
	gw.waitLeaseState(t, tcpLease, "held")
	parked(1, "the ended TCP session no longer parked")
}
