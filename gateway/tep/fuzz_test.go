package tep

import (
	"net/netip"
	"testing"

	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

// fuzzTEP returns a TEP on a fake TUN with one session and a recording link,
// without the reader goroutine: the fuzz functions call the paths directly.
func fuzzTEP(t *testing.T) (*TEP, *fakeTUN, *Session, *fakeLink) {
	dev := newFakeTUN(1)
	tp, err := New(Config{Device: dev, InnerAddr: inner, Pools: []netip.Prefix{pool}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	s, err := tp.AddSession(SessionInfo{ID: "f", Lease: lease, Transport: tunnel.Plain})
	if err != nil {
		t.Fatal(err)
	}
	link := newFakeLink(tunnel.Plain)
	s.SetLink(link)
	return tp, dev, s, link
}

// checkOut asserts that a packet the TEP emitted is well-formed IPv4 with a
// valid header checksum (when the input had one or the TEP built it) and an
// MSS no larger than the session's clamp.
func checkOut(t *testing.T, p []byte, s *Session) {
	t.Helper()
	if packet.Check(p) != nil || len(p) != packet.TotalLen(p) {
		t.Fatalf("emitted malformed packet % x", p[:min(len(p), 40)])
	}
	if mss, ok := packet.SYNMSS(p); ok && mss > s.mss {
		t.Fatalf("emitted SYN with MSS %d > %d", mss, s.mss)
	}
}

// FuzzReceivePacket feeds arbitrary bytes from the tunnel: whatever reaches
// the TUN device must be well-formed, come from the lease and be clamped;
// whatever goes back into the tunnel must be well-formed ICMP to the lease.
func FuzzReceivePacket(f *testing.F) {
	f.Add(ipv4(lease, server, packet.ProtoTCP, 44, true, 1460))
	f.Add(ipv4(lease, server, packet.ProtoUDP, 1500, true, 0))
	f.Add(ipv4(outside, server, packet.ProtoUDP, 60, false, 0))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_, dev, s, link := fuzzTEP(t)
		s.ReceivePackets([][]byte{pkt})
		select {
		case p := <-dev.Out:
			checkOut(t, p, s)
			if packet.Src(p) != lease || len(p) > s.mtu && packet.DF(p) {
				t.Fatalf("TUN got packet from %v of %d bytes", packet.Src(p), len(p))
			}
		default:
		}
		select {
		case p := <-link.out:
			checkOut(t, p, s)
			if packet.Proto(p) != packet.ProtoICMP || packet.Dst(p) != lease || !packet.HeaderChecksumValid(p) {
				t.Fatal("tunnel got something other than an ICMP error to the lease")
			}
		default:
		}
	})
}

// FuzzInside feeds arbitrary bytes read from the TUN device: only packets
// to the lease reach the session queue, clamped and well-formed.
func FuzzInside(f *testing.F) {
	f.Add(ipv4(server, lease, packet.ProtoTCP, 44, true, 1460))
	f.Add(ipv4(server, unused, packet.ProtoUDP, 100, false, 0))
	f.Add(ipv4(server, lease, packet.ProtoUDP, 1600, true, 0))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		tp, dev, s, link := fuzzTEP(t)
		buf := make([]byte, len(pkt))
		copy(buf, pkt)
		tp.handleInside(buf, tp.newInsideScratch(), 0, true)
		if s.writerRunning() { // something was queued: it reaches the link
			p := recv(t, link.out, "the queued packet in the link")
			checkOut(t, p, s)
			if packet.Dst(p) != lease {
				t.Fatalf("queued packet to %v", packet.Dst(p))
			}
		}
		select {
		case p := <-dev.Out:
			if packet.Proto(p) != packet.ProtoICMP || !packet.HeaderChecksumValid(p) {
				t.Fatal("TUN got something other than an ICMP error")
			}
		default:
		}
	})
}
