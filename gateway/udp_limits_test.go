package gateway_test

import (
	"bytes"
	"encoding/base64"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/internal/logging/logtest"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
)

// udpRefusalLogBurst is udp.go's rate limit on refusal log lines (per minute).
const udpRefusalLogBurst = 10

// startGatewayLogged is startGateway (harness_test.go) with the gateway's log, at debug
// level, captured in the returned sink.
func startGatewayLogged(tb testing.TB, mutate func(*config.Config)) (*testGW, *logtest.Sink) {
	tb.Helper()
	sink := &logtest.Sink{}
	return startGatewayWithLog(tb, mutate, zerolog.New(sink).Level(zerolog.DebugLevel)), sink
}

// dialUDPFrom opens a UDP socket to the gateway's TSP port from local (nil: any).
func (gw *testGW) dialUDPFrom(tb testing.TB, local *net.UDPAddr) *net.UDPConn {
	tb.Helper()
	c, err := net.DialUDP("udp", local, gw.udp)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// drops returns the gateway's drop counter for reason.
func (gw *testGW) drops(reason string) uint64 { return gw.g.Dataplane().Drops[reason] }

// waitDrops waits until the drop counter for reason reaches n.
func (gw *testGW) waitDrops(tb testing.TB, reason string, n uint64) {
	tb.Helper()
	eventually(tb, "drops "+reason, func() (bool, error) { return gw.drops(reason) >= n, nil })
}

// sessions lists the gateway's sessions through the admin API.
func (gw *testGW) sessions(tb testing.TB) []admin.Session {
	tb.Helper()
	ss, err := gw.admin.Sessions(testCtx(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return ss
}

func versionDgram(seq uint32) []byte { return dgram(seq, seq+0x100, "VERSION=2.0.2\r\n") }

// wantCapability sends a VERSION from c and checks that it opens an exchange.
func wantCapability(t *testing.T, c net.Conn, seq uint32) {
	t.Helper()
	v := versionDgram(seq)
	if r := udpExchange(t, c, v, waitTimeout); !bytes.HasPrefix(r, append(v[:8:8], "CAPABILITY "...)) {
		t.Fatalf("VERSION from %s answered %q, want CAPABILITY", c.LocalAddr(), r)
	}
}

const busyReply = "530 Server too busy\r\n"

// TestUDPDigestMD5 runs gogoc's DIGEST-MD5 exchange over UDP (tsp-wire-notes §3.6): challenge,
// response, rspauth, then the client's empty datagram answered with 200, a create answered with
// an offer, and accept. With one handshake slot, the established exchange gives its slot back.
func TestUDPDigestMD5(t *testing.T) {
	const realm, uri = "dstm", "tsp/[::1]:3653"
	gw := startGateway(t, func(c *config.Config) {
		c.TSP.Anonymous = false
		c.TSP.DigestMD5 = true
		c.TSP.Passwords = digestFile(t, realm, "alice")
		c.TSP.MaxHandshakes = 1
	})
	c := gw.dialUDPFrom(t, nil)
	capReply := udpExchange(t, c, versionDgram(0xf0), waitTimeout)
	if !bytes.Contains(capReply, []byte("AUTH=DIGEST-MD5")) {
		t.Fatalf("CAPABILITY %q lacks DIGEST-MD5", capReply)
	}
	r := udpExchange(t, c, dgram(0xf1, 0x301, "AUTHENTICATE DIGEST-MD5\r\n\x00"), waitTimeout)
	if len(r) < tsp.HeaderLen || !bytes.HasSuffix(r, []byte("\r\n")) {
		t.Fatalf("challenge datagram %q", r)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(string(r[tsp.HeaderLen:]), "\r\n"))
	if err != nil {
		t.Fatalf("challenge %q: %v", r[tsp.HeaderLen:], err)
	}
	ch, err := sasl.ParseChallenge(raw)
	if err != nil || ch.Realm != realm || ch.Qop != "auth" || ch.Algorithm != "md5-sess" {
		t.Fatalf("challenge %q: %+v %v", raw, ch, err)
	}
	inner := sasl.HA1("alice", realm, "alice-pw")
	cnonce := sasl.FormatCNonce(time.Now().Unix())
	resp := sasl.ClientResponse(ch, "alice", inner, uri, cnonce, false).Marshal()
	r = udpExchange(t, c, dgram(0xf2, 0x302, base64.StdEncoding.EncodeToString(resp)+"\r\n"), waitTimeout)
	wantRsp := base64.StdEncoding.EncodeToString(sasl.MarshalRspAuth(sasl.RspAuthValue(inner, ch.Nonce, cnonce, ch.Qop, uri, false))) + "\r\n"
	if !bytes.Equal(r, dgram(0xf2, 0x302, wantRsp)) {
		t.Fatalf("response answered %q, want rspauth %q", r, wantRsp)
	}
	// The status after rspauth is the answer to the client's empty (header-only) datagram.
	empty := dgram(0xf3, 0x303, "")
	if r := udpExchange(t, c, empty, waitTimeout); !bytes.Equal(r, dgram(0xf3, 0x303, "200 Success\r\n")) {
		t.Fatalf("empty datagram answered %q, want 200 Success", r)
	}
	req := &tsp.Tunnel{Action: tsp.ActionCreate, Type: tsp.TypeV4DTLSV6, Proxy: "no", Client: &tsp.ClientInfo{IPv6: loopback6}}
	x, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	o := parseOfferDatagram(t, udpExchange(t, c, dgram(0xf4, 0x304, string(tsp.MarshalContent(x))), waitTimeout))
	checkOffer(t, o, tsp.TypeV4DTLSV6, loopback6)
	if l := gw.waitLeaseState(t, o.Client.IPv4, "offered"); l.Identity != "alice" {
		t.Errorf("offered lease %+v, want alice's", l)
	}
	accept := dgram(0xf5, 0x305, "Content-length: 51\r\n<tunnel action=\"accept\" type=\"v4dtlsv6\"></tunnel>\r\n")
	if r := udpExchange(t, c, accept, waitTimeout); !bytes.Equal(r, accept[:8]) {
		t.Fatalf("accept answered %q, want the bare header", r)
	}
	gw.waitLeaseState(t, o.Client.IPv4, "active")
	// The only handshake slot came back with the accept.
	wantCapability(t, gw.dialUDPFrom(t, nil), 0xf0)
}

// parseOfferDatagram returns the tunnel offered in a create's reply datagram.
func parseOfferDatagram(t *testing.T, d []byte) *tsp.Tunnel {
	t.Helper()
	_, payload, err := tsp.ParseDatagram(d)
	if err != nil {
		t.Fatalf("offer datagram %q: %v", d, err)
	}
	return parseOffer(t, payload)
}

// TestUDPRefusals: a VERSION beyond tsp.max_sessions_per_source or tsp.max_handshakes is
// answered 530 behind its own header, counted, and logged with the documented fields, at most
// udpRefusalLogBurst lines a minute however many datagrams are refused.
func TestUDPRefusals(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*config.Config)
		open   int    // half-open exchanges (VERSION only) before the refused one
		drop   string // drop counter reason
		reason string // log reason
	}{
		{"source limit", func(c *config.Config) { c.TSP.MaxSessionsPerSource = 1 }, 1,
			"tsp_source_limit", "too many sessions from this source address"},
		{"handshake limit", func(c *config.Config) { c.TSP.MaxHandshakes = 2 }, 2,
			"tsp_udp_handshake_limit", "too many concurrent handshakes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw, logs := startGatewayLogged(t, tc.mutate)
			for range tc.open {
				wantCapability(t, gw.dialUDPFrom(t, nil), 0xf0)
			}
			c := gw.dialUDPFrom(t, nil)
			const refused = udpRefusalLogBurst + 5
			for i := range uint32(refused) {
				v := versionDgram(0xf0 + i)
				if r := udpExchange(t, c, v, waitTimeout); !bytes.Equal(r, append(v[:8:8], busyReply...)) {
					t.Fatalf("VERSION %d answered %q, want %q behind its header", i, r, busyReply)
				}
			}
			if n := gw.drops(tc.drop); n != refused {
				t.Errorf("drops %s = %d, want %d", tc.drop, n, refused)
			}
			lines := logs.Find(t, "TSP session refused", map[string]any{
				"level": "warn", "reason": tc.reason, "remote": c.LocalAddr().String(),
				"control": "udp", "tsp_status": float64(tsp.StatusServerTooBusy),
			})
			if len(lines) != udpRefusalLogBurst {
				t.Errorf("%d refusals logged for %d refused datagrams, want %d (rate-limited)", len(lines), refused, udpRefusalLogBurst)
			}
			if n := len(gw.sessions(t)); n != tc.open {
				t.Errorf("%d sessions, want the %d half-open ones only", n, tc.open)
			}
		})
	}
}

// TestUDPHalfOpenExpires: an exchange that is not established tsp.handshake_timeout after its
// VERSION ends although its client keeps retransmitting; that frees its handshake slot (the
// only one here) and releases a lease it was offered. Its later datagrams are dropped, not
// answered and not turned into a new exchange.
func TestUDPHalfOpenExpires(t *testing.T) {
	const handshake = time.Second // the smallest valid tsp.handshake_timeout
	create := func(t *testing.T) []byte {
		x, err := (&tsp.Tunnel{Action: tsp.ActionCreate, Type: tsp.TypeV4DTLSV6, Proxy: "no", Client: &tsp.ClientInfo{IPv6: loopback6}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return dgram(0xf2, 0x202, string(tsp.MarshalContent(x)))
	}
	tests := []struct {
		name  string
		steps func(t *testing.T) [][]byte // after the VERSION at 0xf0; the last is retransmitted
		offer bool
	}{
		{"version only", func(*testing.T) [][]byte { return nil }, false},
		{"offered, never accepted", func(t *testing.T) [][]byte {
			return [][]byte{dgram(0xf1, 0x201, "AUTHENTICATE ANONYMOUS\r\n\x00"), create(t)}
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw, logs := startGatewayLogged(t, func(c *config.Config) {
				c.TSP.MaxHandshakes = 1
				c.TSP.HandshakeTimeout = config.Duration(handshake)
				c.TSP.UDPIdleTimeout = config.Duration(time.Hour) // not what ends it
			})
			c := gw.dialUDPFrom(t, nil)
			start := time.Now()
			last := versionDgram(0xf0)
			reply := udpExchange(t, c, last, waitTimeout)
			for _, d := range tc.steps(t) {
				last, reply = d, udpExchange(t, c, d, waitTimeout)
			}
			if tc.offer {
				o := parseOfferDatagram(t, reply)
				gw.waitLeaseState(t, o.Client.IPv4, "offered")
				defer func() {
					l, ok, err := gw.leaseOf(testCtx(t), o.Client.IPv4)
					if err != nil || (ok && l.State == "offered") {
						t.Errorf("lease %+v (%v) still offered after the exchange expired", l, err)
					}
				}()
			}
			other := gw.dialUDPFrom(t, nil)
			if r := udpExchange(t, other, versionDgram(0xf0), waitTimeout); !bytes.Equal(r[tsp.HeaderLen:], []byte(busyReply)) {
				t.Fatalf("second exchange while the first holds the only slot: %q, want 530", r)
			}
			// The client retransmits its last datagram every 100 ms: answered (cached) until
			// the exchange expires, dropped after.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			deadline := time.After(waitTimeout)
			for gw.drops("tsp_udp_expired") == 0 {
				if _, err := c.Write(last); err != nil {
					t.Fatal(err)
				}
				select {
				case <-tick.C:
				case <-deadline:
					t.Fatalf("exchange still alive %v after its VERSION (handshake_timeout %v)", time.Since(start), handshake)
				}
			}
			if d := time.Since(start); d < handshake {
				t.Fatalf("exchange expired %v after its VERSION, before handshake_timeout %v", d, handshake)
			}
			if ss := gw.sessions(t); len(ss) != 0 {
				t.Errorf("sessions after expiry: %+v", ss)
			}
			if got := logs.Find(t, "TSP session ended", map[string]any{"reason": "handshake timeout", "control": "udp"}); len(got) != 1 {
				t.Errorf("%d 'TSP session ended' lines for the expired exchange, want 1", len(got))
			}
			wantCapability(t, other, 0xf1) // the slot is free again
			// Retransmissions still get nothing and open nothing.
			for udpRead(t, c, 100*time.Millisecond) != nil { // answers from before the expiry
			}
			before := gw.drops("tsp_udp_expired")
			if r := udpExchange(t, c, last, 200*time.Millisecond); r != nil {
				t.Fatalf("retransmitted VERSION of the expired exchange answered %q", r)
			}
			gw.waitDrops(t, "tsp_udp_expired", before+1)
		})
	}
}

// TestUDPJunkOpensNothing: only a well-formed VERSION datagram creates control state;
// anything else is dropped and counted, takes no handshake slot and leaves no session.
func TestUDPJunkOpensNothing(t *testing.T) {
	gw := startGateway(t, func(c *config.Config) { c.TSP.MaxHandshakes = 1 })
	c := gw.dialUDPFrom(t, nil)
	tests := []struct {
		name string
		b    []byte
		drop string
	}{
		{"no 0xF signature", []byte("hello gateway"), "udp_junk"},
		{"signature only", []byte{0xf0}, "tsp_udp_bad_datagram"},
		{"shorter than the header", []byte{0xf0, 0, 0, 0xf0, 0, 0, 1}, "tsp_udp_bad_datagram"},
		{"payload over 4096 bytes", dgram(0xf0, 1, "VERSION=2.0.2\r\n"+strings.Repeat(" ", tsp.MaxDatagramPayload)), "tsp_udp_bad_datagram"},
		{"header only", dgram(0xf0, 1, ""), "tsp_udp_no_session"},
		{"AUTHENTICATE first", dgram(0xf1, 1, "AUTHENTICATE ANONYMOUS\r\n\x00"), "tsp_udp_no_session"},
		{"create first", dgram(0xf2, 1, "Content-length: 46\r\n<tunnel action=\"create\" type=\"v4v6\"></tunnel>\r\n"), "tsp_udp_no_session"},
		{"garbage in a header", dgram(0xf0, 1, "VERSION 2.0.2\r\n"), "tsp_udp_no_session"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := gw.drops(tc.drop)
			if r := udpExchange(t, c, tc.b, 100*time.Millisecond); r != nil {
				t.Fatalf("answered %q", r)
			}
			gw.waitDrops(t, tc.drop, before+1)
			if ss := gw.sessions(t); len(ss) != 0 {
				t.Fatalf("sessions %+v", ss)
			}
		})
	}
	// None of it kept the only handshake slot or state for this address and port.
	wantCapability(t, c, 0xf0)
}

// TestUDPIdleExpiry: the control state of an established exchange is forgotten after
// tsp.udp_idle_timeout without a datagram it answered, while its tunnel lives on (session
// and active lease) until the lease ends.
func TestUDPIdleExpiry(t *testing.T) {
	// Below the 5s minimum of the configuration file, which the test does not load.
	const idle = time.Second
	gw := startGateway(t, func(c *config.Config) { c.TSP.UDPIdleTimeout = config.Duration(idle) })
	c := gw.dialUDPFrom(t, nil)
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	m := anonymousClient(t, tsp.TransportUDP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if n, err := udpSession(c, m); err != nil || n != 4 {
		t.Fatalf("UDP session: %d datagrams, %v", n, err)
	}
	established := time.Now()
	addr := m.Offer().Client.IPv4
	gw.waitLeaseState(t, addr, "active")
	// A datagram older than the last answered one (accept, 0xf3) is dropped as stale while
	// the exchange is known, and as opening nothing once it is forgotten. Neither refreshes it.
	probe := dgram(0xf1, 0x999, "AUTHENTICATE ANONYMOUS\r\n\x00")
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitTimeout)
	for before := gw.drops("tsp_udp_no_session"); gw.drops("tsp_udp_no_session") == before; {
		if _, err := c.Write(probe); err != nil {
			t.Fatal(err)
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("exchange still known %v after it was established (udp_idle_timeout %v)", time.Since(established), idle)
		}
	}
	if d := time.Since(established); d < idle {
		t.Fatalf("exchange forgotten %v after it was established, before udp_idle_timeout %v", d, idle)
	}
	if gw.drops("tsp_udp_bad_datagram") == 0 {
		t.Error("no probe was dropped as stale before the exchange was forgotten")
	}
	if l, ok, err := gw.leaseOf(testCtx(t), addr); err != nil || !ok || l.State != "active" {
		t.Fatalf("lease %+v (found %v, %v) after the exchange was forgotten, want active", l, ok, err)
	}
	if ss := gw.sessions(t); len(ss) != 1 || ss[0].Lease != addr.String() {
		t.Fatalf("sessions %+v, want the tunnel's", ss)
	}
	// The address and port may start a new exchange.
	wantCapability(t, c, 0xf0)
}

// TestUDPRestartedRefusalKeepsItsSlot: a refused exchange keeps its handshake slot until
// tsp.handshake_timeout (or its linger) has passed, also when a new VERSION from the same
// address and port replaces it; and the refusals of exchanges that never authenticated are
// logged rate-limited, however many such VERSIONs one (spoofable) source sends.
func TestUDPRestartedRefusalKeepsItsSlot(t *testing.T) {
	gw, sink := startGatewayLogged(t, func(c *config.Config) {
		c.TSP.MaxHandshakes = 2
		c.TSP.HandshakeTimeout = config.Duration(time.Minute) // no sweep frees a slot here
	})
	c := gw.dialUDPFrom(t, nil)
	const n = 3 * udpRefusalLogBurst
	refusals := 0
	for i := range uint32(n) {
		d := dgram(0x10+i, 1, "VERSION=9.9.9\r\n")
		switch r := udpExchange(t, c, d, waitTimeout); {
		case bytes.Equal(r, dgram(0x10+i, 1, "302 Unsupported client version\r\n")):
			refusals++
		case bytes.Equal(r, dgram(0x10+i, 1, busyReply)):
		default:
			t.Fatalf("VERSION %d answered %q", i, r)
		}
	}
	if refusals != 2 {
		t.Fatalf("%d VERSIONs from one port were refused with 302 %d times, want 2 (then the 2 slots are taken)", n, refusals)
	}
	if got := len(sink.Find(t, "TSP request refused", map[string]any{"control": "udp"})); got != refusals {
		t.Fatalf("%d refusal lines, want %d", got, refusals)
	}
	if got := len(sink.Find(t, "TSP session refused", map[string]any{"control": "udp"})); got != udpRefusalLogBurst {
		t.Fatalf("%d busy lines, want %d (rate-limited)", got, udpRefusalLogBurst)
	}
}

// TestUDPCannotStarveTCP: TSP-over-UDP exchanges have handshake slots of their own. VERSION
// datagrams need no answer to hold one, so spoofed ones must not lock TCP and TLS clients
// (TSP-SSL, enrollment) out of the TSP port.
func TestUDPCannotStarveTCP(t *testing.T) {
	const slots = 3
	gw := startGateway(t, func(c *config.Config) { c.TSP.MaxHandshakes = slots })
	for range slots {
		wantCapability(t, gw.dialUDPFrom(t, nil), 0xf0) // half-open: holds a UDP slot
	}
	if r := udpExchange(t, gw.dialUDPFrom(t, nil), versionDgram(0xf0), waitTimeout); !bytes.Equal(r, dgram(0xf0, 0x1f0, busyReply)) {
		t.Fatalf("VERSION beyond the UDP slots answered %q, want 530", r)
	}
	for i := range slots { // and the TCP port still has all of its own (one source's share is less)
		c := gw.dialTCPFrom(t, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}))
		if r := rawExchange(t, c, []byte("VERSION=2.0.2\r\n"), lineDone); !bytes.HasPrefix(r, []byte("CAPABILITY ")) {
			t.Fatalf("TCP client after %d half-open UDP exchanges got %q", slots, r)
		}
	}
}

// TestUDPRefusalsAreRateLimited: every refused VERSION is counted, but only udpRefusalRate a
// second (bursts of udpRefusalBurst) are answered: a VERSION's source can be spoofed, and the
// gateway must not reflect floods at it.
func TestUDPRefusalsAreRateLimited(t *testing.T) {
	const (
		burst = 100 // udp.go's udpRefusalBurst and udpRefusalRate (per second)
		rate  = 100
		sent  = 600
	)
	gw := startGateway(t, func(c *config.Config) { c.TSP.MaxHandshakes = 1 })
	wantCapability(t, gw.dialUDPFrom(t, nil), 0xf0) // takes the only slot
	c := gw.dialUDPFrom(t, nil)
	start := time.Now()
	for i := range uint32(sent) {
		if _, err := c.Write(versionDgram(0x1000 + i)); err != nil {
			t.Fatal(err)
		}
	}
	// Every datagram is refused once the gateway has read them all: then count the answers.
	answers := 0
	deadline := time.Now().Add(waitTimeout)
	for gw.drops("tsp_udp_handshake_limit") < sent {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d VERSIONs refused", gw.drops("tsp_udp_handshake_limit"), sent)
		}
		if udpReadQuiet(c, time.Millisecond) {
			answers++
		}
	}
	elapsed := time.Since(start)
	for udpReadQuiet(c, 200*time.Millisecond) {
		answers++
	}
	unanswered := gw.drops("tsp_udp_refusal_unanswered")
	if max := burst + int(rate*elapsed.Seconds()) + 1; answers > max || answers == 0 {
		t.Fatalf("%d refusals answered in %v, want 1..%d", answers, elapsed, max)
	}
	if int(unanswered)+answers != sent || unanswered == 0 {
		t.Fatalf("%d answered + %d unanswered of %d refused", answers, unanswered, sent)
	}
}

// udpReadQuiet reads one datagram within wait and reports whether one came.
func udpReadQuiet(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 2048))
	return err == nil
}
