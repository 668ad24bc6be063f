package dtls

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp"
)

func TestBindAndPackets(t *testing.T) {
	f := newFixture(t, nil)
	token, srvRecv := f.gw.addSession("alice@corp")
	cliRecv := newChanReceiver()
	cl, err := f.dial(t, listenUDP(t), f.clientConfig(t, "alice@corp", token), cliRecv)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sl := f.nextLink(t)

	up := [][]byte{ipv4Packet(20, 1), ipv4Packet(1400, 2), ipv4Packet(576, 3)}
	if err := cl.WritePackets(up); err != nil {
		t.Fatal(err)
	}
	for _, want := range up {
		if got := srvRecv.next(t); !bytes.Equal(got, want) {
			t.Fatalf("server got %d bytes, want %d", len(got), len(want))
		}
	}
	down := [][]byte{ipv4Packet(1400, 4), ipv4Packet(60, 5)}
	if err := sl.WritePackets(down); err != nil {
		t.Fatal(err)
	}
	for _, want := range down {
		if got := cliRecv.next(t); !bytes.Equal(got, want) {
			t.Fatalf("client got %d bytes, want %d", len(got), len(want))
		}
	}
	// Not IPv4: dropped and counted, never delivered.
	if err := cl.WritePackets([][]byte{bytes.Repeat([]byte{0x60}, 40)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "malformed drop", func() bool { return f.server.Stats().DroppedMalformed == 1 })
	select {
	case p := <-srvRecv.ch:
		t.Fatalf("non-IPv4 record delivered: %x", p[:4])
	default:
	}
	if st := sl.Stats(); st.PacketsIn != 3 || st.PacketsOut != 2 {
		t.Fatalf("server link stats %+v", st)
	}
	if st := f.server.Stats(); st.Sessions != 1 || st.HandshakesOK != 1 || st.Handshakes != 0 {
		t.Fatalf("server stats %+v", st)
	}

	// The client closes: the server link ends cleanly and its peer goes.
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sl.Done(), "server link end")
	if err := sl.Err(); err != nil {
		t.Fatalf("server link Err = %v", err)
	}
	waitFor(t, "peer removal", func() bool { return f.server.Stats().Sessions == 0 })
	if err := cl.WritePackets(up); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close = %v", err)
	}
	if err := sl.WritePackets(down); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("server write after close = %v", err)
	}
}

func TestRefused(t *testing.T) {
	f := newFixture(t, nil)
	goodToken, _ := f.gw.addSession("alice@corp")
	tests := []struct {
		name      string
		cfg       func() ClientConfig
		handshake bool // the failure is in the handshake (else at bind)
	}{
		{"wrong token", func() ClientConfig {
			return f.clientConfig(t, "alice@corp", bytes.Repeat([]byte{7}, tsp.TokenLen))
		}, false},
		{"identity mismatch", func() ClientConfig {
			return f.clientConfig(t, "mallory@corp", goodToken)
		}, false},
		{"no client certificate", func() ClientConfig {
			c := f.clientConfig(t, "alice@corp", goodToken)
			c.Certificates = nil
			return c
		}, true},
		{"certificate from another CA", func() ClientConfig {
			c := f.clientConfig(t, "alice@corp", goodToken)
			c.Certificates = []tls.Certificate{f.otherCA.issue(t, "alice@corp", false)}
			return c
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.server.Stats()
			cl, err := f.dial(t, listenUDP(t), tt.cfg(), newChanReceiver())
			if err == nil {
				cl.Close()
				t.Fatal("Dial succeeded")
			}
			if !tt.handshake && !errors.Is(err, ErrBindRefused) {
				t.Fatalf("Dial = %v, want ErrBindRefused", err)
			}
			waitFor(t, "refusal counted", func() bool {
				st := f.server.Stats()
				if tt.handshake {
					return st.HandshakesFailed > before.HandshakesFailed
				}
				return st.BindsRefused > before.BindsRefused
			})
			waitFor(t, "peer removal", func() bool { return f.server.Stats().Sessions == 0 })
		})
	}
	select {
	case l := <-f.gw.links:
		t.Fatalf("a refused client got a link to %v", l.Endpoint())
	default:
	}
}

func TestRoaming(t *testing.T) {
	f := newFixture(t, nil)
	token, srvRecv := f.gw.addSession("alice@corp")
	cliRecv := newChanReceiver()
	first := listenUDP(t)
	rc := NewRebindConn(first)
	cl, err := f.dial(t, rc, f.clientConfig(t, "alice@corp", token), cliRecv)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sl := f.nextLink(t)
	oldAddr := sl.Endpoint()
	if oldAddr.Port() != first.LocalAddr().(*net.UDPAddr).AddrPort().Port() {
		t.Fatalf("server sees %v, client is at %v", oldAddr, first.LocalAddr())
	}
	exchange(t, cl, sl, cliRecv, srvRecv, 1)

	second := listenUDP(t)
	newAddr := second.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := rc.Rebind(second); err != nil {
		t.Fatal(err)
	}
	exchange(t, cl, sl, cliRecv, srvRecv, 2) // client→server moves the server to the new address first
	exchange(t, cl, sl, cliRecv, srvRecv, 3)
	if got := sl.Endpoint(); got.Port() != newAddr.Port() || got == oldAddr {
		t.Fatalf("server sees %v after roaming, want %v", got, newAddr)
	}
	st := f.server.Stats()
	if st.Sessions != 1 || st.HandshakesOK != 1 || st.Roams == 0 {
		t.Fatalf("stats after roaming %+v", st)
	}
	select {
	case <-f.gw.links:
		t.Fatal("roaming created a second link")
	default:
	}
	// The old address no longer reaches the session.
	f.server.mu.RLock()
	_, oldKnown := f.server.byAddr[oldAddr]
	f.server.mu.RUnlock()
	if oldKnown {
		t.Fatalf("old address %v still routed", oldAddr)
	}
}

func TestTSPAndJunkThroughMux(t *testing.T) {
	f := newFixture(t, nil)
	c := listenUDP(t)
	defer c.Close()
	send := func(b []byte) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort(b, f.addr); err != nil {
			t.Fatal(err)
		}
	}
	send([]byte{0x00, 0x01})                                         // junk
	send([]byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0xAA}) // DTLS app data, unknown peer
	send([]byte{0xF0, 0, 0, 0, 0, 0, 0, 0, 'V', 'E', 'R'})           // TSP
	select {
	case got := <-f.tsp.ch:
		if got[0] != 0xF0 || string(got[8:]) != "VER" {
			t.Fatalf("TSP handler got %x", got)
		}
	case <-time.After(testTimeout):
		t.Fatal("TSP datagram not delivered")
	}
	if st := f.mux.Stats(); st.DroppedJunk != 1 || st.DTLS != 1 || st.TSP != 1 {
		t.Fatalf("mux stats %+v", st)
	}
	if st := f.server.Stats(); st.DroppedUnknown != 1 || st.Sessions != 0 {
		t.Fatalf("server stats %+v", st)
	}
}

func TestIdleTimeout(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) { c.IdleTimeout = 100 * time.Millisecond })
	token, _ := f.gw.addSession("alice@corp")
	cl, err := f.dial(t, listenUDP(t), f.clientConfig(t, "alice@corp", token), newChanReceiver())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sl := f.nextLink(t)
	waitDone(t, sl.Done(), "idle close")
	if !errors.Is(sl.Err(), ErrIdle) {
		t.Fatalf("Err = %v, want ErrIdle", sl.Err())
	}
	// The server's close_notify ends the client too.
	waitDone(t, cl.Done(), "client end")
}

func TestHandshakeBound(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) {
		c.MaxHandshakes = 1
		c.HandshakeTimeout = 300 * time.Millisecond
	})
	// pion's first ClientHello with the server's cookie: enough to start a peer, which never
	// completes.
	hello, _ := capturedHellos(t)
	a, b := listenUDP(t), listenUDP(t)
	defer a.Close()
	defer b.Close()
	sendVerifiedHello(t, a, f.addr, hello)
	waitFor(t, "first handshake", func() bool { return f.server.Stats().Handshakes == 1 })
	sendVerifiedHello(t, b, f.addr, hello)
	waitFor(t, "second dropped", func() bool { return f.server.Stats().DroppedHandshakes == 1 })
	waitFor(t, "handshake timeout", func() bool {
		st := f.server.Stats()
		return st.Handshakes == 0 && st.Sessions == 0 && st.HandshakesFailed == 1
	})
}

// sendVerifiedHello sends hello from c, and then hello with the cookie of the
// HelloVerifyRequest that answers it.
func sendVerifiedHello(t *testing.T, c *net.UDPConn, server netip.AddrPort, hello []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(hello, server); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(testTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	cookie, ok := parseHelloVerify(buf[:n])
	if !ok {
		t.Fatalf("not a HelloVerifyRequest: %x", buf[:n])
	}
	if _, err := c.WriteToUDPAddrPort(withCookie(t, hello, cookie), server); err != nil {
		t.Fatal(err)
	}
}

func TestServerCloseEndsLinks(t *testing.T) {
	f := newFixture(t, nil)
	token, _ := f.gw.addSession("alice@corp")
	cl, err := f.dial(t, listenUDP(t), f.clientConfig(t, "alice@corp", token), newChanReceiver())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sl := f.nextLink(t)
	if err := f.server.Close(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sl.Done(), "server link end")
	waitDone(t, cl.Done(), "client end (close_notify)")
	if st := f.server.Stats(); st.Sessions != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewServerValidates(t *testing.T) {
	ok := ServerConfig{
		Certificates: []tls.Certificate{{}},
		ClientCAs:    newTestCA(t, "x").pool,
		Bind:         (&gateway{}).bind,
		Write:        func([]byte, netip.AddrPort) error { return nil },
	}
	tests := []struct {
		name  string
		tweak func(*ServerConfig)
	}{
		{"no bind", func(c *ServerConfig) { c.Bind = nil }},
		{"no write", func(c *ServerConfig) { c.Write = nil }},
		{"no certificate", func(c *ServerConfig) { c.Certificates = nil }},
		{"no client verification", func(c *ServerConfig) { c.ClientCAs = nil }},
	}
	if _, err := NewServer(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.tweak(&c)
			if _, err := NewServer(c); err == nil {
				t.Fatal("NewServer accepted an invalid config")
			}
		})
	}
}
