package gateway_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
)

// readToEOF reads c until it ends (or waitTimeout passes) and returns what arrived and the
// error that ended the reading.
func readToEOF(tb testing.TB, c net.Conn) ([]byte, error) {
	tb.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

// exchange sends each message but the last and reads its one-line reply (the replies are
// not checked), then sends the last and returns everything until the connection ends.
func exchange(tb testing.TB, c net.Conn, msgs []string) ([]byte, error) {
	tb.Helper()
	for _, m := range msgs[:len(msgs)-1] {
		rawExchange(tb, c, []byte(m), lineDone)
	}
	if _, err := c.Write([]byte(msgs[len(msgs)-1])); err != nil {
		tb.Fatalf("write: %v", err)
	}
	return readToEOF(tb, c)
}

func createRequest(tb testing.TB) []byte {
	tb.Helper()
	x, err := (&tsp.Tunnel{Action: tsp.ActionCreate, Type: tsp.TypeV4DTLSV6, Client: &tsp.ClientInfo{IPv6: loopback6}}).Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return tsp.MarshalContent(x)
}

const acceptDTLS = "Content-length: 51\r\n<tunnel action=\"accept\" type=\"v4dtlsv6\"></tunnel>\r\n"

// TestDigestMD5OverTCP authenticates with DIGEST-MD5 over plain TCP byte for byte as gogoc
// does (tsp-wire-notes §3.6, §10.3): gogoc reads the rspauth line and the 200 with one recv()
// each, so they must arrive in separate reads.
func TestDigestMD5OverTCP(t *testing.T) {
	const realm, user = "dstm", "alice"
	gw := startGateway(t, func(c *config.Config) {
		c.TSP.Anonymous = false
		c.TSP.Plain = config.PlainOff
		c.TSP.DigestMD5 = true
		c.TSP.Passwords = digestFile(t, realm, user)
	})
	c := gw.dialTCP(t)
	if got, want := rawExchange(t, c, []byte("VERSION=2.0.2\r\n"), lineDone), "CAPABILITY TUNNEL=V4DTLSV6 TUNNEL=V4ANYV6 AUTH=DIGEST-MD5\r\n"; string(got) != want {
		t.Fatalf("CAPABILITY %q, want %q", got, want)
	}
	line := rawExchange(t, c, []byte("AUTHENTICATE DIGEST-MD5\r\n\x00"), lineDone)
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(string(line), "\r\n"))
	if err != nil {
		t.Fatalf("challenge %q: %v", line, err)
	}
	ch, err := sasl.ParseChallenge(raw)
	if err != nil || ch.Realm != realm || ch.Qop != "auth" || ch.Algorithm != "md5-sess" || ch.Charset != "utf-8" {
		t.Fatalf("challenge %q: %+v %v", raw, ch, err)
	}
	// gogoc: digest-uri "tsp/" + the server as configured, cnonce its Unix time.
	uri, cnonce := "tsp/"+gw.tcp, sasl.FormatCNonce(time.Now().Unix())
	ha1 := sasl.HA1(user, realm, user+"-pw")
	resp := sasl.ClientResponse(ch, user, ha1, uri, cnonce, false)
	if _, err := c.Write([]byte(base64.StdEncoding.EncodeToString(resp.Marshal()) + "\r\n")); err != nil {
		t.Fatal(err)
	}
	wantRspAuth := base64.StdEncoding.EncodeToString(sasl.MarshalRspAuth(sasl.RspAuthValue(ha1, ch.Nonce, cnonce, ch.Qop, uri, false))) + "\r\n"
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4096)
	n, err := c.Read(buf) // one recv(), like gogoc
	if err != nil || string(buf[:n]) != wantRspAuth {
		t.Fatalf("first read after the response: %q (%v), want exactly %q", buf[:n], err, wantRspAuth)
	}
	first := time.Now()
	if got := rawExchange(t, c, nil, lineDone); string(got) != "200 Success\r\n" {
		t.Fatalf("second read %q, want 200 Success", got)
	}
	if gap := time.Since(first); gap < tsp.DigestStatusPause/2 {
		t.Errorf("200 Success came %v after rspauth, want about %v", gap, tsp.DigestStatusPause)
	}
	o := parseOffer(t, rawExchange(t, c, createRequest(t), contentDone))
	checkOffer(t, o, tsp.TypeV4DTLSV6, loopback6)
	if _, err := c.Write([]byte(acceptDTLS)); err != nil {
		t.Fatal(err)
	}
	if l := gw.waitLeaseState(t, o.Client.IPv4, "active"); l.Identity != user {
		t.Errorf("lease %+v, want identity %s", l, user)
	}
}

// TestHandshakeTimeout: a client that stops in the middle of the handshake is closed once
// tsp.handshake_timeout has passed since its connection, without a status (docs/protocol.md,
// "Timeouts and refusals on the TCP port").
func TestHandshakeTimeout(t *testing.T) {
	const timeout = time.Second // the smallest allowed
	gw := startGateway(t, func(c *config.Config) {
		c.TSP.HandshakeTimeout = config.Duration(timeout)
		c.TSP.Plain = config.PlainAlways
		c.TSP.Passwords = digestFile(t, "dstm", "alice")
	})
	tests := []struct {
		name  string
		send  string
		reply string // the reply before the client goes quiet
	}{
		{"after VERSION", "VERSION=2.0.2\r\n", "CAPABILITY TUNNEL=V4DTLSV6 TUNNEL=V4ANYV6 AUTH=PLAIN AUTH=ANONYMOUS\r\n"},
		{"half a line", "VERSION=2.0", ""},
		{"awaiting the PLAIN credentials", "VERSION=2.0.2\r\nAUTHENTICATE PLAIN\r\n\x00", "CAPABILITY TUNNEL=V4DTLSV6 TUNNEL=V4ANYV6 AUTH=PLAIN AUTH=ANONYMOUS\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c := gw.dialTCP(t)
			if _, err := c.Write([]byte(tc.send)); err != nil {
				t.Fatal(err)
			}
			got, err := readToEOF(t, c)
			if string(got) != tc.reply || !errors.Is(err, io.EOF) {
				t.Fatalf("got %q, ended by %v; want %q and a close", got, err, tc.reply)
			}
			if d := time.Since(start); d < timeout {
				t.Errorf("closed after %v, before the handshake timeout %v", d, timeout)
			}
		})
	}
}

// TestMaxHandshakesBusy: with every handshake slot taken, a plain TSP client gets 530 (gogoc
// retries later) and a TLS client a bare close (a status line is garbage inside TLS).
func TestMaxHandshakesBusy(t *testing.T) {
	const slots = 2
	gw := startGateway(t, func(c *config.Config) {
		c.TSP.MaxHandshakes = slots
		c.TSP.HandshakeTimeout = config.Duration(time.Minute) // the holders keep their slots
	})
	var holders []net.Conn
	for range slots {
		c := gw.dialTCP(t)
		if r := rawExchange(t, c, []byte("VERSION=2.0.2\r\n"), lineDone); !bytes.HasPrefix(r, []byte("CAPABILITY ")) {
			t.Fatalf("holder: %q", r)
		}
		holders = append(holders, c)
	}
	tests := []struct {
		name, send, want string
	}{
		{"plain TSP", "VERSION=2.0.2\r\n", "530 Server too busy\r\n"},
		// A TLS record header (handshake, TLS 1.0 record version) and a truncated body.
		{"TLS", "\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := gw.dialTCP(t)
			got, err := exchange(t, c, []string{tc.send})
			if string(got) != tc.want {
				t.Fatalf("got %q (ended by %v), want %q", got, err, tc.want)
			}
		})
	}
	for _, c := range holders {
		c.Close()
	}
	waitForCapability(t, gw, "a handshake slot after the holders left")
}

// TestStreamLimits: a message the splitter cannot take (a line or a Content-length message
// over 8192 bytes) gets 500, framed as the machine frames errors in that phase, and a close.
func TestStreamLimits(t *testing.T) {
	const bare, framed = "500 Invalid request\r\n", "Content-length: 21\r\n500 Invalid request\r\n"
	authenticated := []string{"VERSION=2.0.2\r\n", "AUTHENTICATE ANONYMOUS\r\n\x00"}
	tests := []struct {
		name string
		msgs []string // the replies to all but the last are read and not checked
		want string
	}{
		{"line over 8192 bytes before VERSION", []string{strings.Repeat("V", tsp.MaxStreamMessage+1)}, bare},
		{"Content-length over 8192 before VERSION", []string{"Content-length: 9000\r\n"}, bare},
		{"line over 8192 bytes after VERSION", []string{"VERSION=2.0.2\r\n", strings.Repeat("A", tsp.MaxStreamMessage+1)}, bare},
		{"line over 8192 bytes in the XML phase", append(authenticated, strings.Repeat("<", tsp.MaxStreamMessage+1)), framed},
		{"Content-length over 8192 in the XML phase", append(authenticated, "Content-length: 8193\r\n"), framed},
		{"header and body over 8192 in the XML phase", append(authenticated, "Content-length: 8190\r\n"), framed},
	}
	gw := startGateway(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := gw.dialTCP(t)
			got, err := exchange(t, c, tc.msgs)
			if string(got) != tc.want {
				t.Fatalf("got %q (ended by %v), want %q and a close", got, err, tc.want)
			}
		})
	}
}

// TestPlainTSPDisabled: with listen.plain_tsp off a plain TSP client gets 500 (gogoc stops;
// 530 would make it retry forever) and a close.
func TestPlainTSPDisabled(t *testing.T) {
	gw := startGateway(t, func(c *config.Config) { c.Listen.PlainTSP = false })
	c := gw.dialTCP(t)
	got, err := exchange(t, c, []string{"VERSION=2.0.2\r\n"})
	if string(got) != "500 Invalid request\r\n" || !errors.Is(err, io.EOF) {
		t.Fatalf("got %q, ended by %v; want 500 and a close", got, err)
	}
}

// TestEstablishedWriteDeadline: after establishment the control connection has no read
// deadline (it idles for the tunnel's life and still answers), but every reply must be
// written within tsp.handshake_timeout: a client that keeps asking without reading loses its
// session, and its lease is held for it.
func TestEstablishedWriteDeadline(t *testing.T) {
	const timeout = time.Second
	gw := startGateway(t, func(c *config.Config) { c.TSP.HandshakeTimeout = config.Duration(timeout) })
	ctx := testCtx(t)
	c := gw.dialTCP(t)
	m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := streamSession(c, m); err != nil {
		t.Fatalf("session: %v", err)
	}
	lease := m.Offer().Client.IPv4
	gw.waitLeaseState(t, lease, "active")
	x, err := (&tsp.Tunnel{Action: tsp.ActionInfo}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	info := tsp.MarshalContent(x)

	// Idle past the handshake deadline: the gateway sends nothing and keeps the connection.
	_ = c.SetReadDeadline(time.Now().Add(timeout + timeout/2))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle connection: read %d bytes, %v; want nothing until our deadline", n, err)
	}
	if r := rawExchange(t, c, info, contentDone); !bytes.Contains(r, []byte("200 Success\r\n<tunnel action=\"info\"")) {
		t.Fatalf("info after idling: %q", r)
	}

	// Ask without reading: the gateway's replies fill the socket buffers, then its write
	// times out. The client keeps its default receive buffer: a 4 KiB one sometimes stalled
	// loopback with the client blocked in write before the gateway's write ever blocked.
	batch := bytes.Repeat(info, 64)
	_ = c.SetWriteDeadline(time.Now().Add(waitTimeout))
	for {
		if _, err := c.Write(batch); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the gateway kept a session that does not read for %v", waitTimeout)
			}
			break // reset by the gateway
		}
	}
	eventually(t, "the session ended", func() (bool, error) {
		ss, err := gw.admin.Sessions(ctx)
		return len(ss) == 0, err
	})
	gw.waitLeaseState(t, lease, "held")
}

// TestClientQuitsDuringHandshake: a client that closes before its tunnel is established,
// without a status from the gateway (gogoc, when the CAPABILITY lacks its mode), is logged once
// with the state it stopped in, and an address it was offered goes back.
func TestClientQuitsDuringHandshake(t *testing.T) {
	tests := []struct {
		name  string
		msgs  []string
		state string
	}{
		{"after CAPABILITY", []string{"VERSION=2.0.2\r\n"}, "authenticate"},
		{"after authentication", []string{"VERSION=2.0.2\r\n", "AUTHENTICATE ANONYMOUS\r\n\x00"}, "authenticated"},
		{"after the offer", nil, "offered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw, sink := startGatewayLogged(t, nil)
			c := gw.dialTCP(t)
			var lease netip.Addr
			if tc.msgs == nil {
				m, err := tsp.NewClient(tsp.ClientConfig{
					Transport: tsp.TransportTCP, Mechanism: sasl.Anonymous, DeferAccept: true,
					Request: &tsp.Tunnel{Type: tsp.TypeV4DTLSV6, Client: &tsp.ClientInfo{IPv6: loopback6}},
				})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := streamSession(c, m); err != nil || m.State() != tsp.ClientOffered {
					t.Fatalf("session: %v (state %v)", err, m.State())
				}
				lease = m.Offer().Client.IPv4
				gw.waitLeaseState(t, lease, "offered")
			} else {
				for _, msg := range tc.msgs {
					rawExchange(t, c, []byte(msg), lineDone)
				}
			}
			c.Close()
			want := map[string]any{"reason": "closed by the client during the handshake", "state": tc.state, "control": "tcp"}
			eventually(t, "the log line", func() (bool, error) {
				return len(sink.Find(t, "TSP session ended", want)) == 1, nil
			})
			if lease.IsValid() {
				eventually(t, "the offered address back", func() (bool, error) {
					_, ok, err := gw.leaseOf(testCtx(t), lease)
					return !ok, err
				})
			}
		})
	}
}

// TestSlowlorisFromOneSource: half-open TLS handshakes from one address take at most that
// address's share of the handshake slots, so that clients elsewhere still get through.
func TestSlowlorisFromOneSource(t *testing.T) {
	const slots = 32
	gw, logs := startGatewayLogged(t, func(c *config.Config) {
		c.TSP.MaxHandshakes = slots
		c.TSP.HandshakeTimeout = config.Duration(time.Minute) // the attacker's connections stay
	})
	attacker := netip.MustParseAddr("127.0.0.1")
	held := 0
	for range slots {
		c := gw.dialTCPFrom(t, attacker)
		// A TLS record header and the start of a ClientHello, then nothing.
		if _, err := c.Write([]byte("\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			held++ // still open: it holds a slot
		}
	}
	if held == 0 || held > slots/8 {
		t.Fatalf("one source holds %d of %d handshake slots", held, slots)
	}
	// The refusals are counted, and logged at most 10 times a minute (the first line after a
	// gap says how many were not).
	if n := len(logs.Find(t, "connection refused", map[string]any{"reason": "too many concurrent handshakes from this source"})); n == 0 || n > 10 {
		t.Fatalf("%d refusal lines for %d refusals, want 1..10", n, slots-held)
	}
	for i := range 4 {
		c := gw.dialTCPFrom(t, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}))
		if r := rawExchange(t, c, []byte("VERSION=2.0.2\r\n"), lineDone); !bytes.HasPrefix(r, []byte("CAPABILITY ")) {
			t.Fatalf("client %d during the slowloris got %q", i, r)
		}
	}
}

// TestEnrollmentConnectionsBounded: a source holds at most enrollPerAddr (4) enrollment
// connections (TLS with ALPN http/1.1) at once; more are closed at once, and the bound frees
// up as they close.
func TestEnrollmentConnectionsBounded(t *testing.T) {
	gw := startGateway(t, nil)
	open := func() *tls.Conn {
		c := gw.dialTCPFrom(t, netip.MustParseAddr("127.0.0.1"))
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return tc
	}
	alive := func(c *tls.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, os.ErrDeadlineExceeded)
	}
	var conns []*tls.Conn
	for range 6 {
		conns = append(conns, open())
	}
	held := 0
	for _, c := range conns {
		if alive(c) {
			held++
		}
	}
	if held != 4 {
		t.Fatalf("one source holds %d enrollment connections, want 4", held)
	}
	if n := gw.drops("enroll_connection_limit"); n != 2 {
		t.Fatalf("enroll_connection_limit counted %d, want 2", n)
	}
	for _, c := range conns {
		c.Close()
	}
	// The gateway sees the closes in its own time: wait until it admits again.
	deadline := time.Now().Add(waitTimeout)
	for c := open(); !alive(c); c = open() {
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("no enrollment connection admitted after the holders left")
		}
	}
	gw.enrollIdentity(t, "alice@corp")
}

// TestConnectionRatePerSource: beyond its burst (200) a source's new connections are closed
// at once, without a word, at more than 50 a second, while another source is served.
func TestConnectionRatePerSource(t *testing.T) {
	gw := startGateway(t, nil)
	src := netip.MustParseAddr("127.0.0.1")
	refused := 0
	const n = 300
	for range n {
		c := gw.dialTCPFrom(t, src)
		_, _ = c.Write([]byte("VERSION=2.0.2\r\n")) // may fail: the gateway may have closed
		switch got := rawExchange(t, c, nil, lineDone); {
		case len(got) == 0:
			refused++
		case bytes.HasPrefix(got, []byte("CAPABILITY ")):
		case bytes.HasPrefix(got, []byte("530 ")):
			// Admitted by the rate limit, but the gateway had not yet seen enough of the
			// earlier closes: the source's concurrent-handshake share was full (a loaded CI
			// machine). That is the other limit working, not this one.
		default:
			t.Fatalf("got %q", got)
		}
		c.Close()
	}
	if n := gw.drops("tcp_connection_rate"); n != uint64(refused) {
		t.Fatalf("tcp_connection_rate counted %d, %d refused", n, refused)
	}
	if refused == 0 || refused > n-200 {
		t.Fatalf("%d of %d connections from one source refused, want 1..%d", refused, n, n-200)
	}
	c := gw.dialTCPFrom(t, netip.MustParseAddr("127.0.0.9"))
	if r := rawExchange(t, c, []byte("VERSION=2.0.2\r\n"), lineDone); !bytes.HasPrefix(r, []byte("CAPABILITY ")) {
		t.Fatalf("another source got %q", r)
	}
}
