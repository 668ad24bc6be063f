package gateway_test

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
)

var (
	innerV4   = netip.MustParseAddr("100.64.0.1")
	defPool   = netip.MustParsePrefix("100.64.0.0/16")
	loopback6 = netip.IPv6Loopback()
)

// anonymousClient is the tsp.Client of a plain-TSP ANONYMOUS session asking for typ.
func anonymousClient(t testing.TB, tr tsp.Transport, typ, accept tsp.TunnelType) *tsp.Client {
	t.Helper()
	m, err := tsp.NewClient(tsp.ClientConfig{
		Transport: tr, Mechanism: sasl.Anonymous, AcceptType: accept,
		Request: &tsp.Tunnel{Type: typ, Client: &tsp.ClientInfo{IPv6: loopback6}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func plainClient(t testing.TB, user, pass string) *tsp.Client {
	t.Helper()
	m, err := tsp.NewClient(tsp.ClientConfig{
		Transport: tsp.TransportTCP, Mechanism: sasl.Plain, Username: user, Password: pass,
		AcceptType: tsp.TypeV4DTLSV6,
		Request:    &tsp.Tunnel{Type: tsp.TypeV4DTLSV6, Client: &tsp.ClientInfo{IPv6: loopback6}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkOffer checks the parts of an offer every tunnel type shares.
func checkOffer(t testing.TB, o *tsp.Tunnel, typ tsp.TunnelType, server6 netip.Addr) {
	t.Helper()
	checkOfferIn(t, o, typ, server6, defPool)
}

// checkOfferIn is checkOffer for a lease from pool.
func checkOfferIn(t testing.TB, o *tsp.Tunnel, typ tsp.TunnelType, server6 netip.Addr, pool netip.Prefix) {
	t.Helper()
	if o.Type != typ || o.Action != tsp.ActionInfo {
		t.Fatalf("offer %s/%s, want info/%s", o.Action, o.Type, typ)
	}
	if !pool.Contains(o.Client.IPv4) || o.Client.IPv4 == innerV4 {
		t.Errorf("leased %s: not a pool address", o.Client.IPv4)
	}
	if o.Server.IPv4 != innerV4 || o.Server.IPv6 != server6 || o.Client.IPv6 != loopback6 {
		t.Errorf("offer addresses server %s/%s client %s/%s", o.Server.IPv4, o.Server.IPv6, o.Client.IPv4, o.Client.IPv6)
	}
	if o.Client.Keepalive == nil || o.Client.Keepalive.Interval != 30 || o.Client.Keepalive.Address != innerV4 {
		t.Errorf("keepalive %+v, want 30 s to %s", o.Client.Keepalive, innerV4)
	}
	if o.Lifetime < 3590 || o.Lifetime > 3600 {
		t.Errorf("lifetime %d, want about 3600", o.Lifetime)
	}
}

func TestPlainTSPOverTCP(t *testing.T) {
	gw := startGateway(t, nil)
	ctx := testCtx(t)
	c := gw.dialTCP(t)
	m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := streamSession(c, m); err != nil {
		t.Fatalf("session: %v", err)
	}
	o := m.Offer()
	checkOffer(t, o, tsp.TypeV4DTLSV6, loopback6)
	if o.Data == nil || o.Data.Port != uint16(gw.udp.Port) || len(o.Data.Transports) != 1 || o.Data.Transports[0] != tsp.TypeV4DTLSV6 {
		t.Errorf("data element %+v, want port %d and v4dtlsv6 only (no TLS over plain TCP)", o.Data, gw.udp.Port)
	}
	if o.MTU == 0 || o.MTU > 1380 {
		t.Errorf("mtu %d", o.MTU)
	}
	l := gw.waitLeaseState(t, o.Client.IPv4, "active")
	if l.Identity != "127.0.0.1" || l.Session == "" || l.Transport != string(tsp.TypeV4DTLSV6) {
		t.Errorf("active lease %+v", l)
	}
	ss, err := gw.admin.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].Lease != o.Client.IPv4.String() || ss[0].Mechanism != "ANONYMOUS" {
		t.Errorf("sessions %+v, %v", ss, err)
	}
	c.Close()
	held := gw.waitLeaseState(t, o.Client.IPv4, "held")
	if held.Identity != "127.0.0.1" {
		t.Errorf("held lease %+v", held)
	}
	eventually(t, "no sessions", func() (bool, error) {
		ss, err := gw.admin.Sessions(ctx)
		return len(ss) == 0, err
	})
}

// gogocRequest is gogoc's v4v6 create (tsp-wire-notes §3.8) taken from the recorded
// transcript, with the client's endpoint replaced by addr.
func gogocRequest(t *testing.T, addr string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "tsp", "testdata", "tcp-plain.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, `C "Content-length: `) || !strings.Contains(line, `action=\"create\"`) {
			continue
		}
		q, err := strconv.Unquote(strings.TrimPrefix(line, "C "))
		if err != nil {
			t.Fatal(err)
		}
		body, err := tsp.ParseContent([]byte(q))
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.Replace(body, []byte(">2001:db8:5572::2<"), []byte(">"+addr+"<"), 1)
		return tsp.MarshalContent(body)
	}
	t.Fatal("no create request in the transcript")
	return nil
}

// TestPlainV4V6GogocBytes speaks gogoc's exact bytes for a v4v6 session over TCP/IPv6. The
// plain transport needs a raw IP socket: root only.
func TestPlainV4V6GogocBytes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("v4v6 needs the raw-socket plain transport (root)")
	}
	gw := startGateway(t, func(c *config.Config) {
		c.Listen.Addresses = []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}
		c.TEP.PlainTransport = true
		c.TEP.IPv6 = loopback6
		c.Policy.Default.Transports = []string{auth.TransportV4V6, auth.TransportV4AnyV6}
	})
	c := gw.dialTCP(t)
	steps := []struct {
		send, want string
		done       func([]byte) bool
	}{
		{"VERSION=2.0.2\r\n", "CAPABILITY TUNNEL=V4V6 TUNNEL=V4DTLSV6 TUNNEL=V4ANYV6 AUTH=ANONYMOUS\r\n", lineDone},
		{"AUTHENTICATE ANONYMOUS\r\n\x00", "200 Success\r\n", lineDone},
	}
	for _, s := range steps {
		if got := rawExchange(t, c, []byte(s.send), s.done); string(got) != s.want {
			t.Fatalf("after %q got %q, want %q", s.send, got, s.want)
		}
	}
	req := gogocRequest(t, "::1")
	if !bytes.HasPrefix(req, []byte("Content-length: 212\r\n")) {
		t.Fatalf("request is not gogoc's 212-byte create: %q", req)
	}
	rest := offerXML(t, rawExchange(t, c, req, contentDone))
	for _, bad := range []string{"<?xml", "mtu=", "<data", "type=\"ipv4\">100.64.0.1</address></dns_server>"} {
		if bytes.Contains(rest, []byte(bad)) {
			t.Errorf("classic offer contains %q: %q", bad, rest)
		}
	}
	o, err := tsp.ParseTunnel(rest)
	if err != nil {
		t.Fatalf("offer XML: %v\n%s", err, rest)
	}
	checkOffer(t, o, tsp.TypeV4V6, loopback6)
	if len(o.Client.DNSServers) != 1 || !o.Client.DNSServers[0].Is6() {
		t.Errorf("dns_server %v: gogoc needs one IPv6 address", o.Client.DNSServers)
	}
	if !bytes.Contains(rest, []byte(`<address type="ipv4">`+o.Client.IPv4.String()+`</address>`)) {
		t.Errorf("offer bytes do not carry the lease: %q", rest)
	}
	// gogoc's accept gets no reply on TCP.
	if _, err := c.Write([]byte("Content-length: 35\r\n<tunnel action=\"accept\"></tunnel>\r\n")); err != nil {
		t.Fatal(err)
	}
	l := gw.waitLeaseState(t, o.Client.IPv4, "active")
	if l.Transport != string(tsp.TypeV4V6) || l.Endpoint != "::1" {
		t.Errorf("lease %+v", l)
	}
	c.Close()
	gw.waitLeaseState(t, o.Client.IPv4, "held")
}

// udpExchange sends one datagram and returns the one reply (nil after a quiet wait).
func udpExchange(t *testing.T, c net.Conn, b []byte, wait time.Duration) []byte {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return udpRead(t, c, wait)
}

func udpRead(t *testing.T, c net.Conn, wait time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf[:n]...)
}

func dgram(seq, ts uint32, payload string) []byte {
	return tsp.AppendDatagram(nil, tsp.Header{Seq: seq, Timestamp: ts}, []byte(payload))
}

func TestPlainTSPOverUDP(t *testing.T) {
	gw := startGateway(t, nil)
	c, err := net.DialUDP("udp", nil, gw.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const quiet = 300 * time.Millisecond

	// Junk is dropped without an answer: not TSP, a short "TSP" datagram.
	for _, junk := range [][]byte{[]byte("hello gateway"), {0xf0, 0x00, 0x01}} {
		if r := udpExchange(t, c, junk, quiet); r != nil {
			t.Fatalf("junk %x answered with %q", junk, r)
		}
	}
	version := []byte{0xf0, 0x00, 0x00, 0xf0, 0x00, 0x00, 0x02, 0xfb}
	version = append(version, "VERSION=2.0.2\r\n"...)
	capReply := udpExchange(t, c, version, waitTimeout)
	wantCap := append(append([]byte(nil), version[:8]...), "CAPABILITY TUNNEL=V4DTLSV6 TUNNEL=V4ANYV6 AUTH=ANONYMOUS\r\n"...)
	if !bytes.Equal(capReply, wantCap) {
		t.Fatalf("CAPABILITY reply %q, want %q", capReply, wantCap)
	}
	// A retransmission (same sequence) gets the identical reply, once.
	if again := udpExchange(t, c, version, waitTimeout); !bytes.Equal(again, capReply) {
		t.Fatalf("retransmitted VERSION answered %q, want %q", again, capReply)
	}
	auth := dgram(0xf1, 0x2fd, "AUTHENTICATE ANONYMOUS\r\n\x00")
	if r := udpExchange(t, c, auth, waitTimeout); !bytes.Equal(r, dgram(0xf1, 0x2fd, "200 Success\r\n")) {
		t.Fatalf("AUTHENTICATE answered %q", r)
	}
	req := &tsp.Tunnel{Action: tsp.ActionCreate, Type: tsp.TypeV4DTLSV6, Proxy: "no", Client: &tsp.ClientInfo{IPv6: loopback6}}
	x, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	create := dgram(0xf2, 0x2ff, string(tsp.MarshalContent(x)))
	offerDg := udpExchange(t, c, create, waitTimeout)
	h, payload, err := tsp.ParseDatagram(offerDg)
	if err != nil || h != (tsp.Header{Seq: 0xf2, Timestamp: 0x2ff}) {
		t.Fatalf("offer datagram header %+v %v", h, err)
	}
	o := parseOffer(t, payload)
	checkOffer(t, o, tsp.TypeV4DTLSV6, loopback6)
	// gogoc retransmits with a fresh timestamp: same answer, the new header echoed.
	create2 := dgram(0xf2, 0x7d0, string(tsp.MarshalContent(x)))
	if r := udpExchange(t, c, create2, waitTimeout); !bytes.Equal(r[8:], payload) || !bytes.Equal(r[:8], create2[:8]) {
		t.Fatalf("retransmitted create answered %q", r)
	}
	accept := dgram(0xf3, 0x301, "Content-length: 51\r\n<tunnel action=\"accept\" type=\"v4dtlsv6\"></tunnel>\r\n")
	if r := udpExchange(t, c, accept, waitTimeout); !bytes.Equal(r, accept[:8]) {
		t.Fatalf("accept answered %q, want the bare header", r)
	}
	if r := udpExchange(t, c, accept, waitTimeout); !bytes.Equal(r, accept[:8]) {
		t.Fatalf("retransmitted accept answered %q, want the bare header", r)
	}
	if r := udpRead(t, c, quiet); r != nil {
		t.Fatalf("extra datagram %q: want exactly one reply per datagram", r)
	}
	l := gw.waitLeaseState(t, o.Client.IPv4, "active")
	if l.Transport != string(tsp.TypeV4DTLSV6) {
		t.Errorf("lease %+v", l)
	}
	if n := gw.g.Dataplane().Drops["tsp_udp_bad_datagram"]; n == 0 {
		t.Errorf("the short TSP datagram was not counted as dropped")
	}
}

func TestTSPOverUDPClientMachine(t *testing.T) {
	gw := startGateway(t, nil)
	c, err := net.DialUDP("udp", nil, gw.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	m := anonymousClient(t, tsp.TransportUDP, tsp.TypeV4AnyV6, tsp.TypeV4DTLSV6)
	n, err := udpSession(c, m)
	if err != nil {
		t.Fatalf("UDP session after %d datagrams: %v", n, err)
	}
	if n != 4 {
		t.Errorf("%d datagrams, want 4 (version, auth, create, accept)", n)
	}
	if o := m.Offer(); len(o.Data.Transports) != 1 || o.Data.Transports[0] != tsp.TypeV4DTLSV6 {
		t.Errorf("v4anyv6 over UDP offers %v, want v4dtlsv6 only", o.Data.Transports)
	}
	gw.waitLeaseState(t, m.Offer().Client.IPv4, "active")
}

// digestFile writes an htdigest file with the users (password = user + "-pw").
func digestFile(t testing.TB, realm string, users ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "passwords")
	var b []byte
	for _, u := range users {
		var err error
		if b, err = auth.AppendDigestLine(b, u, realm, u+"-pw"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*config.Config)
		msgs   []string // sent in order; the reply to the last is checked
		want   string   // exact reply bytes before the connection closes
	}{
		{"plain TSP disabled", func(c *config.Config) { c.Listen.PlainTSP = false },
			[]string{"VERSION=2.0.2\r\n"}, "500 Invalid request\r\n"},
		{"bad version", nil, []string{"VERSION=1.0.1\r\n"}, "302 Unsupported client version\r\n"},
		{"unknown mechanism", nil, // not a mechanism name the gateway knows: unparsable
			[]string{"VERSION=2.0.2\r\n", "AUTHENTICATE PASSDSS-3DES-1\r\n\x00"}, "500 Invalid request\r\n"},
		{"mechanism not offered", nil,
			[]string{"VERSION=2.0.2\r\n", "AUTHENTICATE DIGEST-MD5\r\n\x00"}, "300 Authentication failed\r\n"},
		{"anonymous off", func(c *config.Config) {
			c.TSP.Anonymous = false
			c.TSP.Plain = config.PlainAlways
			c.TSP.Passwords = digestFile(t, "dstm", "alice")
		}, []string{"VERSION=2.0.2\r\n", "AUTHENTICATE ANONYMOUS\r\n\x00"}, "300 Authentication failed\r\n"},
		// PLAIN is then only a placeholder on plain TCP: the right password must fail too.
		{"plain tls_only, right password over plain TCP", func(c *config.Config) {
			c.TSP.Anonymous = false
			c.TSP.Plain = config.PlainTLSOnly
			c.TSP.Passwords = digestFile(t, "dstm", "alice")
		}, []string{"VERSION=2.0.2\r\n", "AUTHENTICATE PLAIN\r\n\x00\x00alice\x00alice-pw\r\n"}, "300 Authentication failed\r\n"},
		{"plain off, right password", func(c *config.Config) {
			c.TSP.Anonymous = false
			c.TSP.Plain = config.PlainOff
			c.TSP.Passwords = digestFile(t, "dstm", "alice")
		}, []string{"VERSION=2.0.2\r\n", "AUTHENTICATE PLAIN\r\n\x00\x00alice\x00alice-pw\r\n"}, "300 Authentication failed\r\n"},
		{"anonymous off, no passwords", func(c *config.Config) { c.TSP.Anonymous = false },
			[]string{"VERSION=2.0.2\r\n", "AUTHENTICATE ANONYMOUS\r\n\x00"}, "300 Authentication failed\r\n"},
		{"gogoc retries VERSION=2.0.0", nil, []string{"VERSION=2.0.0\r\n", "AUTHENTICATE ANONYMOUS\r\n\x00",
			string(tsp.MarshalContent([]byte("<tunnel action=\"bogus\"></tunnel>\r\n")))}, "Content-length: 21\r\n500 Invalid request\r\n"},
		{"v6 broker type", nil,
			[]string{"VERSION=2.0.2\r\n", "AUTHENTICATE ANONYMOUS\r\n\x00",
				"Content-length: 46\r\n<tunnel action=\"create\" type=\"v6v4\"></tunnel>\r\n"},
			"Content-length: 29\r\n303 Unsupported tunnel type\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := startGateway(t, tc.mutate)
			c := gw.dialTCP(t)
			var got []byte
			for i, m := range tc.msgs {
				done := lineDone
				if strings.HasPrefix(m, "Content-length") {
					done = contentDone
				}
				if i == len(tc.msgs)-1 {
					done = func([]byte) bool { return false } // read to EOF
				}
				got = rawExchange(t, c, []byte(m), done)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q before close, want %q", got, tc.want)
			}
		})
	}
}

func TestPoolExhausted(t *testing.T) {
	const realm = "dstm"
	gw := startGateway(t, func(c *config.Config) {
		c.Pools = []config.Pool{{Name: "tiny", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/30")}}}
		c.Policy.Default.Pool = "tiny"
		c.TSP.Anonymous = false
		c.TSP.Plain = config.PlainAlways
		c.TSP.Passwords = digestFile(t, realm, "u1", "u2", "u3")
	})
	got := map[netip.Addr]bool{}
	for _, u := range []string{"u1", "u2"} {
		c := gw.dialTCP(t)
		m := plainClient(t, u, u+"-pw")
		if _, err := streamSession(c, m); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		got[m.Offer().Client.IPv4] = true
		gw.waitLeaseState(t, m.Offer().Client.IPv4, "active")
	}
	if !got[netip.MustParseAddr("10.9.0.1")] || !got[netip.MustParseAddr("10.9.0.2")] {
		t.Fatalf("leases %v, want 10.9.0.1 and 10.9.0.2", got)
	}
	c := gw.dialTCP(t)
	for _, s := range []struct{ send, want string }{
		{"VERSION=2.0.2\r\n", "CAPABILITY TUNNEL=V4DTLSV6 TUNNEL=V4ANYV6 AUTH=PLAIN\r\n"},
		{"AUTHENTICATE PLAIN\r\n\x00\x00u3\x00u3-pw\r\n", "200 Success\r\n"},
	} {
		if r := rawExchange(t, c, []byte(s.send), lineDone); string(r) != s.want {
			t.Fatalf("after %q: %q, want %q", s.send, r, s.want)
		}
	}
	x, _ := (&tsp.Tunnel{Action: tsp.ActionCreate, Type: tsp.TypeV4DTLSV6, Client: &tsp.ClientInfo{IPv6: loopback6}}).Marshal()
	r := rawExchange(t, c, tsp.MarshalContent(x), func([]byte) bool { return false })
	if want := "Content-length: 31\r\n301 No more tunnels available\r\n"; string(r) != want {
		t.Fatalf("third identity got %q, want %q", r, want)
	}
	body, _ := tsp.ParseContent(r)
	if !bytes.Equal(body, []byte("301 No more tunnels available\r\n")) {
		t.Fatalf("status line %q", body)
	}
}

func TestTooManySessionsPerSource(t *testing.T) {
	gw := startGateway(t, func(c *config.Config) { c.TSP.MaxSessionsPerSource = 1 })
	first := gw.dialTCP(t)
	if r := rawExchange(t, first, []byte("VERSION=2.0.2\r\n"), lineDone); !bytes.HasPrefix(r, []byte("CAPABILITY ")) {
		t.Fatalf("first session: %q", r)
	}
	second := gw.dialTCP(t)
	r := rawExchange(t, second, []byte("VERSION=2.0.2\r\n"), func([]byte) bool { return false })
	if string(r) != "530 Server too busy\r\n" {
		t.Fatalf("second session from the same source got %q, want 530", r)
	}
	// The first session is unaffected and, once it ends, the source may connect again.
	first.Close()
	waitForCapability(t, gw, "a new session after the first closed")
}

func TestStickyLease(t *testing.T) {
	const realm = "dstm"
	gw := startGateway(t, func(c *config.Config) {
		c.TSP.Plain = config.PlainAlways
		c.TSP.Passwords = digestFile(t, realm, "alice", "bob")
	})
	session := func(m *tsp.Client) netip.Addr {
		c := gw.dialTCP(t)
		if _, err := streamSession(c, m); err != nil {
			t.Fatal(err)
		}
		a := m.Offer().Client.IPv4
		gw.waitLeaseState(t, a, "active")
		c.Close()
		gw.waitLeaseState(t, a, "held")
		return a
	}
	for _, tc := range []struct {
		name string
		m    func() *tsp.Client
	}{
		{"anonymous", func() *tsp.Client {
			return anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
		}},
		{"plain alice", func() *tsp.Client { return plainClient(t, "alice", "alice-pw") }},
		{"plain bob", func() *tsp.Client { return plainClient(t, "bob", "bob-pw") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a1 := session(tc.m())
			a2 := session(tc.m())
			if a1 != a2 {
				t.Fatalf("reconnect got %s, first session had %s", a2, a1)
			}
		})
	}
	ls, err := gw.admin.Leases(testCtx(t))
	if err != nil || len(ls) != 3 {
		t.Fatalf("leases %+v %v: want three distinct held leases", ls, err)
	}
}

// TestUDPReconnectFromSamePort: gogoc starts every session on a new socket with the
// sequence at 0xF0. When a new socket gets the port of an earlier session (ephemeral port
// reuse, NAT), the gateway must answer the new session, not drop it as stale.
func TestUDPReconnectFromSamePort(t *testing.T) {
	gw := startGateway(t, nil)
	first, err := net.DialUDP("udp", nil, gw.udp)
	if err != nil {
		t.Fatal(err)
	}
	local := first.LocalAddr().(*net.UDPAddr)
	_ = first.SetDeadline(time.Now().Add(waitTimeout))
	m := anonymousClient(t, tsp.TransportUDP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := udpSession(first, m); err != nil {
		t.Fatal(err)
	}
	first.Close()
	again, err := net.DialUDP("udp", local, gw.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	version := dgram(0xf0, 1, "VERSION=2.0.2\r\n")
	r := udpExchange(t, again, version, 3*time.Second)
	if !bytes.HasPrefix(r, append(version[:8:8], "CAPABILITY "...)) {
		t.Fatalf("new session from the port of an established one got %q, want CAPABILITY", r)
	}
}
