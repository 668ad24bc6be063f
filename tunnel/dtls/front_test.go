package dtls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"

	"github.com/dstmgw/dstm/internal/testclock"
)

// goroutineSlack allows for goroutines of the runtime and the test framework that come and go;
// a peer costs four or more (its own and pion's).
const goroutineSlack = 3

// A flood of cookie-less ClientHellos from one host, from addresses of its /64 and ever new
// ports, creates no peer and no goroutine, and a real client's handshake through the same
// server succeeds while it lasts.
func TestHelloFlood(t *testing.T) {
	f := newFixture(t, nil)
	hello, _ := capturedHellos(t)
	client := listenUDP(t)
	clientAddr := client.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	attacker := f.sources(1, clientAddr)[0]
	token, _ := f.gw.addSession("alice@corp")

	base, start := runtime.NumGoroutine(), time.Now()
	const first = 2000
	for i := range first {
		f.server.HandleDatagram(hello, netip.AddrPortFrom(inSubnet(attacker, i%64), uint16(1024+i)))
	}
	st := f.server.Stats()
	if g := runtime.NumGoroutine(); g > base+goroutineSlack {
		t.Fatalf("goroutines %d after the flood, %d before", g, base)
	}
	if st.Sessions != 0 || st.Handshakes != 0 {
		t.Fatalf("the flood made peers: %+v", st)
	}
	answers := uint64(helloSourceBurst + helloSourceRate*time.Since(start).Seconds() + 1)
	if st.HelloVerifies+st.DroppedHelloRate != first || st.HelloVerifies > answers {
		t.Fatalf("%d HelloVerifyRequests, %d unanswered, for %d ClientHellos from one /64",
			st.HelloVerifies, st.DroppedHelloRate, first)
	}

	stop, flooded := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				flooded <- n
				return
			default:
			}
			f.server.HandleDatagram(hello, netip.AddrPortFrom(inSubnet(attacker, n%64), uint16(3072+n%60000)))
			n++
		}
	}()
	cl, err := f.dial(t, client, f.clientConfig(t, "alice@corp", token), newChanReceiver())
	close(stop)
	n := <-flooded
	if err != nil {
		t.Fatalf("real client during a flood of %d: %v", n, err)
	}
	defer cl.Close()
	f.nextLink(t)
	st = f.server.Stats()
	if st.Sessions != 1 || st.HandshakesOK != 1 || st.DroppedHandshakes != 0 || st.DroppedSourceLimit != 0 {
		t.Fatalf("stats %+v", st)
	}
	if held := f.server.perSource.Held(clientAddr); held != 0 {
		t.Fatalf("a completed handshake still holds %d of its source's share", held)
	}
	t.Logf("%d ClientHellos flooded during the handshake; %+v", first+n, st)
}

// Only the cookie made for this ClientHello's parameters, from this address and port, under
// the current or previous secret, starts a peer; every refusal is counted, and answered with
// a fresh cookie or, for a client that answers the standard way, an alert.
func TestCookieChecks(t *testing.T) {
	f := newFixture(t, nil)
	hello, _ := capturedHellos(t)
	src := f.sources(2)
	from := netip.AddrPortFrom(src[0], 4000)
	cookie := f.cookieFor(t, hello, from)
	h, _ := parseClientHello(hello)
	changed := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 1
		return b
	}
	flip := func(i int) []byte { return changed(cookie, i) }
	good := withCookie(t, hello, cookie)
	seq1 := bytes.Clone(good)
	seq1[headerLen+5] = 1 // message_seq: what a standard client sends after the HelloVerifyRequest

	const (
		badCookie = "bad cookie"
		oldClient = "old client"
		admitted  = "admitted"
		toPeer    = "to the peer"
	)
	tests := []struct {
		name string
		b    []byte
		from netip.AddrPort
		want string
	}{
		{"another port", good, netip.AddrPortFrom(src[0], 4001), badCookie},
		{"another address", good, netip.AddrPortFrom(src[1], 4000), badCookie},
		{"forged MAC", withCookie(t, hello, flip(cookieLen-1)), from, badCookie},
		{"forged generation", withCookie(t, hello, flip(0)), from, badCookie},
		{"truncated", withCookie(t, hello, cookie[:cookieLen-1]), from, badCookie},
		{"another server's", withCookie(t, hello, testCookie), from, badCookie},
		{"another random", withCookie(t, changed(hello, helloBodyAt+2), cookie), from, badCookie},
		{"another cipher suite", withCookie(t, changed(hello, h.cookieAt+4), cookie), from, badCookie},
		{"standard second ClientHello", seq1, from, oldClient},
		{"valid", good, from, admitted},
		{"again, to the new peer", good, from, toPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.server.Stats()
			f.server.HandleDatagram(tt.b, tt.from)
			st := f.server.Stats()
			bad, old, sessions := st.DroppedBadCookie-before.DroppedBadCookie,
				st.DroppedOldClient-before.DroppedOldClient, st.Sessions-before.Sessions
			switch tt.want {
			case badCookie:
				if bad != 1 || sessions != 0 || st.HelloVerifies != before.HelloVerifies+1 {
					t.Fatalf("stats %+v, before %+v", st, before)
				}
				fresh, ok := parseHelloVerify(f.sent(t, tt.from))
				if !ok || bytes.Equal(fresh, cookie) && tt.from != from {
					t.Fatalf("answer: %x", fresh)
				}
			case oldClient:
				if old != 1 || bad != 0 || sessions != 0 {
					t.Fatalf("stats %+v, before %+v", st, before)
				}
				want := appendAlert(nil, h.recSeq, alertHandshakeFailure)
				if got := f.sent(t, tt.from); !bytes.Equal(got, want) {
					t.Fatalf("answer %x, want the alert %x", got, want)
				}
			case admitted:
				if sessions != 1 || st.Handshakes != 1 || bad != 0 {
					t.Fatalf("stats %+v, before %+v", st, before)
				}
			case toPeer:
				if sessions != 0 || bad != 0 || st.DroppedUnknown != before.DroppedUnknown {
					t.Fatalf("stats %+v, before %+v", st, before)
				}
			}
		})
	}
}

// The secret rotates every cookieRotation: a cookie made under the previous secret is still
// good, one made two rotations ago is not (and its client gets a fresh one).
func TestCookieRotation(t *testing.T) {
	hello, _ := capturedHellos(t)
	tests := []struct {
		name  string
		steps []time.Duration // the clock moves by each, and a cookie is made after each
		valid bool
	}{
		{"same secret", []time.Duration{cookieRotation - 1}, true},
		{"previous secret", []time.Duration{cookieRotation}, true},
		{"previous secret, last moment", []time.Duration{2*cookieRotation - 1}, true},
		{"two rotations", []time.Duration{2 * cookieRotation}, false},
		{"two rotations, one at a time", []time.Duration{cookieRotation, cookieRotation}, false},
		{"an hour later", []time.Duration{time.Hour}, false},
		{"clock set back", []time.Duration{-time.Hour}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := testclock.New(time.Now())
			f := newFixture(t, func(c *ServerConfig) { c.Now = clock.Now })
			src := f.sources(2)
			from, other := netip.AddrPortFrom(src[0], 4000), netip.AddrPortFrom(src[1], 4000)
			cookie := f.cookieFor(t, hello, from)
			for _, d := range tt.steps {
				clock.Advance(d)
				f.cookieFor(t, hello, other)
			}
			f.server.HandleDatagram(withCookie(t, hello, cookie), from)
			st := f.server.Stats()
			if tt.valid {
				if st.Sessions != 1 || st.DroppedBadCookie != 0 {
					t.Fatalf("valid cookie refused: %+v", st)
				}
				return
			}
			if st.Sessions != 0 || st.DroppedBadCookie != 1 {
				t.Fatalf("expired cookie accepted: %+v", st)
			}
			fresh, ok := parseHelloVerify(f.sent(t, from))
			if !ok {
				t.Fatal("no fresh cookie")
			}
			f.server.HandleDatagram(withCookie(t, hello, fresh), from)
			if st := f.server.Stats(); st.Sessions != 1 {
				t.Fatalf("fresh cookie refused: %+v", st)
			}
		})
	}
}

// Handshakes in progress are bounded per source address and per IPv6 /64 before any peer
// state; a peer that goes returns its share.
func TestHandshakeSourceLimit(t *testing.T) {
	f := newFixture(t, func(c *ServerConfig) {
		c.MaxHandshakesPerAddr, c.MaxHandshakesPerNet = 2, 3
	})
	hello, _ := capturedHellos(t)
	a1 := netip.MustParseAddr("2001:db8:0:1::1")
	a2 := netip.MustParseAddr("2001:db8:0:1::2") // a1's /64
	b := netip.MustParseAddr("2001:db8:0:2::1")
	v4 := netip.MustParseAddr("192.0.2.1")
	steps := []struct {
		from netip.AddrPort
		ok   bool
	}{
		{netip.AddrPortFrom(a1, 1), true},
		{netip.AddrPortFrom(a1, 2), true},
		{netip.AddrPortFrom(a1, 3), false}, // a1 holds 2
		{netip.AddrPortFrom(a2, 1), true},
		{netip.AddrPortFrom(a2, 2), false}, // the /64 holds 3
		{netip.AddrPortFrom(b, 1), true},
		{netip.AddrPortFrom(v4, 1), true},
		{netip.AddrPortFrom(v4, 2), true},
		{netip.AddrPortFrom(v4, 3), false},
	}
	admit := func(from netip.AddrPort) bool {
		t.Helper()
		before := f.server.Stats()
		f.server.HandleDatagram(withCookie(t, hello, f.cookieFor(t, hello, from)), from)
		st := f.server.Stats()
		switch {
		case st.Sessions == before.Sessions+1 && st.DroppedSourceLimit == before.DroppedSourceLimit:
			return true
		case st.Sessions == before.Sessions && st.DroppedSourceLimit == before.DroppedSourceLimit+1:
			return false
		}
		t.Fatalf("stats %+v, before %+v", st, before)
		return false
	}
	for i, s := range steps {
		if got := admit(s.from); got != s.ok {
			t.Fatalf("step %d: %v admitted = %v, want %v", i, s.from, got, s.ok)
		}
	}
	f.server.mu.RLock()
	p := f.server.byAddr[steps[0].from]
	f.server.mu.RUnlock()
	p.closeSession()
	waitFor(t, "peer removal", func() bool { return f.server.Stats().Sessions == 5 })
	if !admit(steps[2].from) {
		t.Fatal("a peer that went did not return its source's share")
	}
}

// Answers to ClientHellos are rate-limited per source, an IPv6 /64 or an IPv4 address (100/s,
// bursts of 200), and in all (HelloVerifyRate); the refusals are counted.
func TestHelloReplyLimits(t *testing.T) {
	hello, _ := capturedHellos(t)
	v4 := netip.MustParseAddr("192.0.2.7")
	type step struct {
		src      int  // index into the sources; -1: the IPv4 source
		spread   bool // each ClientHello from another address of the source's /64
		n        int  // ClientHellos sent
		answered uint64
		advance  time.Duration // before the step
	}
	tests := []struct {
		name  string
		rate  float64
		steps []step
	}{
		{"one address", 10000, []step{
			{src: 0, n: 250, answered: helloSourceBurst},
			{src: 1, n: 1, answered: 1},
			{src: 0, n: 20, answered: 10, advance: 100 * time.Millisecond},
			{src: 0, n: 300, answered: helloSourceBurst, advance: time.Hour},
		}},
		{"one /64, many addresses", 10000, []step{
			{src: 0, spread: true, n: 250, answered: helloSourceBurst},
			{src: 1, n: 1, answered: 1},
		}},
		{"one IPv4 address", 10000, []step{
			{src: -1, n: 250, answered: helloSourceBurst},
			{src: 0, n: 1, answered: 1},
		}},
		{"all sources", 10, []step{
			{src: 0, n: 5, answered: 5},
			{src: 1, n: 5, answered: 5},
			{src: 2, n: 5, answered: 0},
			{src: 2, n: 5, answered: 5, advance: 500 * time.Millisecond},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := testclock.New(time.Now())
			f := newFixture(t, func(c *ServerConfig) {
				c.Now = clock.Now
				c.HelloVerifyRate = tt.rate
			})
			src := f.sources(3, v4)
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				before := f.server.Stats()
				for j := range s.n {
					a := v4
					if s.src >= 0 {
						a = src[s.src]
					}
					if s.spread {
						a = inSubnet(a, j)
					}
					f.server.HandleDatagram(hello, netip.AddrPortFrom(a, uint16(1000*i+j+1)))
				}
				st := f.server.Stats()
				answered, unanswered := st.HelloVerifies-before.HelloVerifies, st.DroppedHelloRate-before.DroppedHelloRate
				if answered != s.answered || answered+unanswered != uint64(s.n) {
					t.Fatalf("step %d: %d answered, %d not, want %d of %d", i, answered, unanswered, s.answered, s.n)
				}
			}
			if st := f.server.Stats(); st.Sessions != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// inSubnet returns the address of a's /64 with interface identifier i+1.
func inSubnet(a netip.Addr, i int) netip.Addr {
	b := a.As16()
	binary.BigEndian.PutUint64(b[8:], uint64(i)+1)
	return netip.AddrFrom16(b)
}

// A DTLS client that answers the HelloVerifyRequest the standard way (pion without
// helloConn, as older dstm-clients) is refused at once with an alert and counted.
func TestOldClientRefused(t *testing.T) {
	f := newFixture(t, nil)
	cfg := f.clientConfig(t, "alice@corp", make([]byte, 32))
	dc, err := piondtls.ClientWithOptions(listenUDP(t), net.UDPAddrFromAddrPort(f.addr), clientOptions(cfg)...)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("handshake = %v, ctx %v; want the alert", err, ctx.Err())
	}
	if st := f.server.Stats(); st.DroppedOldClient != 1 || st.HelloVerifies != 1 || st.Sessions != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// The client still works with a server whose pion does its own cookie exchange (a gateway
// before the stateless front): helloConn leaves that HelloVerifyRequest to pion.
func TestDialServerWithPionCookies(t *testing.T) {
	ca := newTestCA(t, "dstm test root")
	serverCert := ca.issue(t, "gw.test", true)
	client := listenUDP(t)
	loopback := client.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	ln, err := piondtls.ListenWithOptions("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)),
		piondtls.WithCertificates(serverCert), piondtls.WithClientCAs(ca.pool),
		piondtls.WithClientAuth(piondtls.RequireAndVerifyClientCert),
		piondtls.WithExtendedMasterSecret(piondtls.RequireExtendedMasterSecret),
		piondtls.WithInsecureSkipVerifyHello(false))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		buf := make([]byte, maxRecord)
		n, err := c.Read(buf) // the token
		if err == nil {
			_, err = c.Write(buf[:n]) // acknowledged by echoing it
		}
		served <- err
	}()
	token := bytes.Repeat([]byte{1}, 32)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cl, err := Dial(ctx, client, ln.Addr().(*net.UDPAddr).AddrPort(), ClientConfig{
		Certificates: []tls.Certificate{ca.issue(t, "alice@corp", false)},
		RootCAs:      ca.pool, ServerName: "gw.test", Token: token,
	}, newChanReceiver())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer cl.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("server did not finish")
	}
}

// helloConn answers the gateway's HelloVerifyRequest from the server's address, within its
// bound, puts the cookie into the first ClientHello's retransmissions, and stops at the
// ServerHello.
func TestHelloConn(t *testing.T) {
	first, second := capturedHellos(t)
	sc := newScriptConn()
	hc := newHelloConn(sc)
	h, _ := parseClientHello(first)
	cookie := bytes.Repeat([]byte{3}, cookieLen)
	hvr := appendHelloVerify(nil, h, cookie)
	marker := dtlsRecord(23, 1, nil, []byte{1, 2, 3})
	read := func() []byte {
		t.Helper()
		buf := make([]byte, 2048)
		n, _, err := hc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	written := func() []byte {
		t.Helper()
		select {
		case b := <-sc.out:
			return b
		default:
			return nil
		}
	}
	foreign := netip.MustParseAddrPort("[2001:db8::66]:3653")

	if _, err := hc.WriteTo(first, sc.peer); err != nil {
		t.Fatal(err)
	}
	if got := written(); !bytes.Equal(got, first) {
		t.Fatalf("first ClientHello changed on the way out: %x", got)
	}
	// A HelloVerifyRequest from elsewhere is ignored; pion sees none of them.
	sc.in <- sent{b: hvr, to: foreign}
	sc.in <- sent{b: marker}
	if got := read(); !bytes.Equal(got, marker) || written() != nil {
		t.Fatal("answered a HelloVerifyRequest from another address")
	}
	sc.in <- sent{b: hvr}
	sc.in <- sent{b: marker}
	if got := read(); !bytes.Equal(got, marker) {
		t.Fatalf("pion got %x", got)
	}
	want := withCookie(t, first, cookie)
	if got := written(); !bytes.Equal(got, want) {
		t.Fatalf("answer %x, want %x", got, want)
	}
	// pion's retransmission carries the cookie; its standard second ClientHello is untouched.
	retransmit := bytes.Clone(first)
	retransmit[10] = 1 // record sequence number
	if _, err := hc.WriteTo(retransmit, sc.peer); err != nil {
		t.Fatal(err)
	}
	if got := written(); !bytes.Equal(got, withCookie(t, retransmit, cookie)) {
		t.Fatalf("retransmission %x", got)
	}
	if _, err := hc.WriteTo(second, sc.peer); err != nil || !bytes.Equal(written(), second) {
		t.Fatal("second ClientHello changed")
	}
	// At most maxHelloVerifies are answered.
	for range maxHelloVerifies + 2 {
		sc.in <- sent{b: hvr}
	}
	sc.in <- sent{b: marker}
	read()
	n := 0
	for written() != nil {
		n++
	}
	if n != maxHelloVerifies-1 {
		t.Fatalf("%d more HelloVerifyRequests answered, want %d", n, maxHelloVerifies-1)
	}
	// After the ServerHello everything passes through.
	serverHello := dtlsRecord(22, 0, nil, []byte{handshakeServerHello, 0, 0, 0})
	sc.in <- sent{b: serverHello}
	if got := read(); !bytes.Equal(got, serverHello) {
		t.Fatalf("ServerHello not delivered: %x", got)
	}
	sc.in <- sent{b: hvr}
	if got := read(); !bytes.Equal(got, hvr) {
		t.Fatal("HelloVerifyRequest kept from pion after the ServerHello")
	}
	if _, err := hc.WriteTo(first, sc.peer); err != nil || !bytes.Equal(written(), first) {
		t.Fatal("ClientHello changed after the ServerHello")
	}
}

// A peer's pion gets a ClientHello without the cookie it carried.
func TestDeliverHelloWithoutCookie(t *testing.T) {
	f := newFixture(t, nil)
	first, _ := capturedHellos(t)
	p := newPeer(f.server, netip.MustParseAddrPort("[2001:db8::1]:1"))
	defer p.Close()
	for _, b := range [][]byte{withCookie(t, first, bytes.Repeat([]byte{5}, cookieLen)), first} {
		p.deliverHello(b, p.remote)
		d := <-p.queue
		if !bytes.Equal(d.buf, first) {
			t.Fatalf("peer got %x, want %x", d.buf, first)
		}
	}
}
