package dtls

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func TestPeerQueueAndAddress(t *testing.T) {
	var wrote []netip.AddrPort
	s, err := NewServer(ServerConfig{
		Certificates: []tls.Certificate{{}},
		ClientCAs:    newTestCA(t, "x").pool,
		Bind:         (&gateway{}).bind,
		Write: func(_ []byte, to netip.AddrPort) error {
			wrote = append(wrote, to)
			return nil
		},
		QueueLen: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort("[2001:db8::1]:4000")
	b := netip.MustParseAddrPort("[2001:db8::2]:5000")
	p := newPeer(s, a)
	s.mu.Lock()
	s.peers[p] = struct{}{}
	s.byAddr[a] = p
	s.mu.Unlock()

	big := make([]byte, poolBufSize+100)
	big[0] = 1
	p.deliver([]byte{1, 2, 3}, a)
	p.deliver(big, b)
	p.deliver([]byte{9}, a) // queue full: newest dropped
	if st := s.Stats(); st.DroppedQueueFull != 1 {
		t.Fatalf("stats %+v", st)
	}
	buf := make([]byte, 4096)
	n, from, err := p.ReadFrom(buf)
	if err != nil || n != 3 || from.(*net.UDPAddr).AddrPort() != a {
		t.Fatalf("first read %d %v %v", n, from, err)
	}
	n, from, err = p.ReadFrom(buf[:10])
	if !errors.Is(err, io.ErrShortBuffer) || n != 10 || from.(*net.UDPAddr).AddrPort() != b {
		t.Fatalf("short read %d %v %v", n, from, err)
	}
	if err := p.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline = %v", err)
	}

	// pion answering at a new address re-keys the peer.
	if _, err := p.WriteTo([]byte{1}, net.UDPAddrFromAddrPort(b)); err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	atA, atB := s.byAddr[a], s.byAddr[b]
	s.mu.RUnlock()
	if atA != nil || atB != p || len(wrote) != 1 || wrote[0] != b || s.Stats().Roams != 1 {
		t.Fatalf("after roam: a→%p b→%p wrote %v", atA, atB, wrote)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close = %v", err)
	}
	p.deliver([]byte{1}, a)
	if st := s.Stats(); st.DroppedClosed != 1 || st.Sessions != 0 {
		t.Fatalf("after close %+v", st)
	}
}
