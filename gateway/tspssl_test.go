package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
	"github.com/dstmgw/dstm/tunnel/stream"
	"github.com/dstmgw/dstm/tunnel/tlsrec"
)

var outside = netip.MustParseAddr("192.0.2.7") // an IPv4 host behind the gateway

// externalClient is the tsp.Client of a TSP-SSL EXTERNAL session asking for typ.
func externalClient(t testing.TB, typ tsp.TunnelType) *tsp.Client {
	t.Helper()
	m, err := tsp.NewClient(tsp.ClientConfig{
		Transport: tsp.TransportTLS, Mechanism: sasl.External, DeferAccept: true,
		Request: &tsp.Tunnel{Type: typ, Client: &tsp.ClientInfo{IPv6: loopback6}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tlsTunnel is an accepted v4tlsv6 session: the TLS connection carries frames.
type tlsTunnel struct {
	c     net.Conn // a *tlsrec.Conn, or a *tls.Conn (ALPN tsp/2)
	m     *tsp.Client
	lease netip.Addr
	buf   []byte // received, not yet parsed
}

// openTLSTunnel runs TSP-SSL up to an accepted v4tlsv6 tunnel and waits until the gateway has
// its lease active.
func openTLSTunnel(t testing.TB, gw *testGW, st *enroll.State) *tlsTunnel {
	t.Helper()
	return openTLSTunnelIn(t, gw, st, defPool)
}

// openTLSTunnelIn is openTLSTunnel for a lease from pool.
func openTLSTunnelIn(t testing.TB, gw *testGW, st *enroll.State, pool netip.Prefix) *tlsTunnel {
	t.Helper()
	return openTLSTunnelProto(t, gw, st, pool, tlsrec.ALPN)
}

// openTLSTunnelProto is openTLSTunnelIn with the client offering ALPN proto (and tsp/2 after
// it): tlsrec.ALPN as dstm-client does, the records taken over after the handshake, or
// "tsp/2" alone as older clients do.
func openTLSTunnelProto(t testing.TB, gw *testGW, st *enroll.State, pool netip.Prefix, proto string) *tlsTunnel {
	t.Helper()
	var c net.Conn
	if proto == tlsrec.ALPN {
		c = gw.dialTLSRec(t, st)
	} else {
		tc, err := gw.dialTLS(testCtx(t), st, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "tsp/2" {
			t.Fatalf("ALPN %q", p)
		}
		c = tc
	}
	t.Cleanup(func() { c.Close() })
	m := externalClient(t, tsp.TypeV4AnyV6)
	sp, err := streamSession(c, m)
	if err != nil {
		t.Fatalf("TSP-SSL session: %v", err)
	}
	o := m.Offer()
	checkOfferIn(t, o, tsp.TypeV4AnyV6, loopback6, pool)
	if o.Data == nil || len(o.Data.Transports) != 2 || o.Data.Transports[0] != tsp.TypeV4DTLSV6 || o.Data.Transports[1] != tsp.TypeV4TLSV6 {
		t.Fatalf("offer data %+v, want v4dtlsv6,v4tlsv6", o.Data)
	}
	replies, err := m.Accept(tsp.TypeV4TLSV6)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeReplies(c, replies); err != nil {
		t.Fatal(err)
	}
	gw.waitLeaseState(t, o.Client.IPv4, "active")
	return &tlsTunnel{c: c, m: m, lease: o.Client.IPv4, buf: sp.Rest()}
}

// readFrame returns the next frame: an IPv4 packet or (control) a TSP message. Keepalive
// frames are skipped.
func (tt *tlsTunnel) readFrame(t *testing.T) (pkt []byte, control bool) {
	t.Helper()
	_ = tt.c.SetReadDeadline(time.Now().Add(waitTimeout))
	b := make([]byte, 65536)
	for {
		if len(tt.buf) >= stream.HeaderLen+1 && tt.buf[stream.HeaderLen] == stream.ControlMarker {
			n := int(tt.buf[0])<<8 | int(tt.buf[1])
			if len(tt.buf) >= stream.HeaderLen+n {
				msg := append([]byte(nil), tt.buf[stream.HeaderLen+1:stream.HeaderLen+n]...)
				tt.buf = tt.buf[stream.HeaderLen+n:]
				return msg, true
			}
		} else {
			p, used, err := stream.ParseFrame(tt.buf, 65535)
			if err != nil {
				t.Fatalf("bad frame from the gateway: %v", err)
			}
			if used > 0 {
				tt.buf = tt.buf[used:]
				if p == nil {
					continue
				}
				return append([]byte(nil), p...), false
			}
		}
		n, err := tt.c.Read(b)
		tt.buf = append(tt.buf, b[:n]...)
		if err != nil && n == 0 {
			t.Fatalf("reading frames: %v", err)
		}
	}
}

func (tt *tlsTunnel) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	if _, err := tt.c.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatal(err)
	}
}

// fromGateway waits for the next packet the gateway wrote to its TUN device.
func (gw *testGW) fromGateway(t *testing.T) []byte {
	t.Helper()
	select {
	case p := <-gw.fromG:
		return p
	case <-time.After(waitTimeout):
		t.Fatal("no packet came out of the gateway's TUN device")
		return nil
	}
}

func addrs(p []byte) (src, dst netip.Addr) {
	return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
}

// TestTSPSSLStream: a whole v4tlsv6 session (data both ways, the inner source checked, a
// renewal in control frames), on stream records (tlsrec) and on crypto/tls's records.
func TestTSPSSLStream(t *testing.T) {
	for _, proto := range []string{tlsrec.ALPN, "tsp/2"} {
		t.Run(proto, func(t *testing.T) { testTSPSSLStream(t, proto) })
	}
}

func testTSPSSLStream(t *testing.T, proto string) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "alice@example.com")
	tt := openTLSTunnelProto(t, gw, st, defPool, proto)
	var l admin.Lease
	eventually(t, "the lease active on v4tlsv6", func() (bool, error) {
		var err error
		l, _, err = gw.leaseOf(testCtx(t), tt.lease)
		return l.State == "active" && l.Transport == string(tsp.TypeV4TLSV6), err
	})
	if l.Identity != "alice@example.com" {
		t.Errorf("lease %+v", l)
	}

	// Client → gateway: a spoofed inner source is dropped, the lease's own source passes.
	spoofed := tuntest.Ping(outside, netip.MustParseAddr("100.64.9.9"))
	good := tuntest.Ping(outside, tt.lease)
	tt.send(t, stream.AppendFrame(nil, spoofed), stream.AppendFrame(nil, good))
	p := gw.fromGateway(t)
	if src, dst := addrs(p); src != tt.lease || dst != outside || !bytes.Equal(p, good) {
		t.Fatalf("gateway forwarded %s→%s, want the good packet %s→%s", src, dst, tt.lease, outside)
	}
	eventually(t, "the spoofed packet counted", func() (bool, error) {
		return gw.g.Dataplane().Drops["spoofed_source"] == 1, nil
	})
	select {
	case p := <-gw.fromG:
		src, dst := addrs(p)
		t.Fatalf("unexpected packet %s→%s on the TUN device", src, dst)
	default:
	}

	// Gateway → client: a packet to the lease arrives as a frame.
	in := tuntest.Ping(tt.lease, outside)
	select {
	case gw.tun.Outbound <- in:
	case <-time.After(waitTimeout):
		t.Fatal("gateway does not read its TUN device")
	}
	pkt, control := tt.readFrame(t)
	if control || !bytes.Equal(pkt, in) {
		t.Fatalf("got frame %x (control %v), want the injected packet", pkt, control)
	}

	// Renewal on the same connection: a create as a control frame, the offer comes back as
	// a control frame with the same address; the accept goes back the same way.
	replies, err := tt.m.Renew()
	if err != nil {
		t.Fatal(err)
	}
	tt.send(t, stream.AppendControl(nil, replies[0].Payload))
	msg, control := tt.readFrame(t)
	if !control {
		t.Fatalf("renewal answered with a data frame %x", msg)
	}
	if _, err := tt.m.Step(msg); err != nil {
		t.Fatalf("renewal offer %q: %v", msg, err)
	}
	if o := tt.m.Offer(); o.Client.IPv4 != tt.lease {
		t.Fatalf("renewal offered %s, lease is %s", o.Client.IPv4, tt.lease)
	}
	acc, err := tt.m.Accept(tsp.TypeV4TLSV6)
	if err != nil {
		t.Fatal(err)
	}
	tt.send(t, stream.AppendControl(nil, acc[0].Payload))
	// The tunnel still carries data after the renewal.
	tt.send(t, stream.AppendFrame(nil, good))
	if p := gw.fromGateway(t); !bytes.Equal(p, good) {
		t.Fatal("packet after renewal not forwarded")
	}
	gw.waitLeaseState(t, tt.lease, "active")
}

// revokeToClose revokes target and returns how long the TLS connection took to close, and
// what the admin API answered.
func revokeToClose(ctx context.Context, gw *testGW, c net.Conn, target string) (time.Duration, admin.RevokeResult, error) {
	closed := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		b := make([]byte, 4096)
		for {
			if _, err := c.Read(b); err != nil {
				closed <- err
				return
			}
		}
	}()
	start := time.Now()
	res, err := gw.admin.Revoke(ctx, target)
	if err != nil {
		return 0, res, err
	}
	err = <-closed
	d := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return d, res, errors.New("the connection was not closed after the revocation")
	}
	return d, res, nil
}

func TestRevocationClosesSession(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "bob@example.com")
	tt := openTLSTunnel(t, gw, st)
	d, res, err := revokeToClose(testCtx(t), gw, tt.c, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("revoke → close: %v", d)
	// Whichever path closed it (the admin call or the CA's revocation event), the operator
	// is told that the live session was closed.
	if res.Sessions != 1 || len(res.Serials) != 1 {
		t.Errorf("revoke answered %+v, want one serial and one session closed", res)
	}
	if d > time.Second {
		t.Errorf("revoke → close took %v", d)
	}
	// on_revoke: release (default) frees the lease; the certificate no longer connects.
	var l admin.Lease
	var ok bool
	eventually(t, "the revoked lease released", func() (bool, error) {
		var err error
		l, ok, err = gw.leaseOf(testCtx(t), tt.lease)
		if err == nil && ok && l.State != "free" {
			err = fmt.Errorf("lease %s is %s", l.Addr, l.State)
		}
		return !ok || l.State == "free", err
	})
	c, err := gw.dialTLS(testCtx(t), st, nil)
	if err == nil {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, _ = c.Write([]byte("VERSION=2.0.2\r\n"))
		if _, err = c.Read(make([]byte, 64)); err == nil {
			t.Fatal("a revoked certificate still opens TSP-SSL")
		}
	}
}

func TestTSPSSLWithoutCertificateRefused(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "carol@example.com")
	c, err := gw.dialTLS(testCtx(t), nil, st)
	if err != nil {
		return // refused during the handshake
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, _ = c.Write([]byte("VERSION=2.0.2\r\n"))
	n, err := c.Read(make([]byte, 256))
	if err == nil || n > 0 {
		t.Fatalf("TSP-SSL without a client certificate answered %d bytes, %v", n, err)
	}
	var alert tls.AlertError
	if !errors.As(err, &alert) && !errors.Is(err, io.EOF) {
		t.Logf("refusal surfaced as %v", err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the gateway kept a certificate-less tsp/2 connection open")
	}
}

// TestRevokeOneSerialKeepsOtherCertificates revokes one of two certificates of an identity:
// only the session authenticated with the revoked certificate may end.
func TestRevokeOneSerialKeepsOtherCertificates(t *testing.T) {
	gw := startGateway(t, func(c *config.Config) { c.Leases.MaxSessions = 2 })
	a := gw.enrollIdentity(t, "dave@example.com")
	b := gw.enrollIdentity(t, "dave@example.com")
	ta := openTLSTunnel(t, gw, a)
	tb := openTLSTunnel(t, gw, b)
	_, res, err := revokeToClose(testCtx(t), gw, ta.c, a.Leaf.SerialNumber.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Sessions != 1 {
		t.Errorf("revoking one serial answered %+v, want one session closed", res)
	}
	// The revocation event is handled asynchronously: watch the other lease for a while.
	ctx := testCtx(t)
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		l, ok, err := gw.leaseOf(ctx, tb.lease)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || l.State != "active" {
			t.Fatalf("revoking %s (certificate A) ended the lease of certificate B's session: %+v", a.Leaf.SerialNumber, l)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Certificate B's tunnel still carries packets.
	good := tuntest.Ping(outside, tb.lease)
	tb.send(t, stream.AppendFrame(nil, good))
	if p := gw.fromGateway(t); !bytes.Equal(p, good) {
		t.Fatal("certificate B's tunnel no longer forwards")
	}
}

// TestRecordTakeoverRefusals: tsp/2-rec1 without a client certificate is refused as tsp/2 is,
// and a client whose first application data is not the marker is closed; the gateway goes
// on serving.
func TestRecordTakeoverRefusals(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "carol@example.com")
	for _, tc := range []struct {
		name  string
		cert  bool
		first string
	}{
		{"no certificate", false, tlsrec.Marker},
		{"no marker", true, "VERSION=2.0.2\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.DialTimeout("tcp", gw.tcp, waitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			cfg := st.ClientTLSConfig("localhost", tlsrec.ALPN)
			cfg.MinVersion = tls.VersionTLS13
			if !tc.cert {
				cfg.Certificates = nil
			}
			c := tls.Client(raw, cfg)
			_ = c.SetDeadline(time.Now().Add(waitTimeout))
			if err := c.Handshake(); err != nil {
				return // refused during the handshake
			}
			_, _ = c.Write([]byte(tc.first))
			var err2 error
			buf := make([]byte, 256)
			for err2 == nil { // the gateway's marker may come first; then the end
				_, err2 = c.Read(buf)
			}
			var ne net.Error
			if errors.As(err2, &ne) && ne.Timeout() {
				t.Fatal("the gateway kept the connection open")
			}
		})
	}
	tt := openTLSTunnel(t, gw, st)
	gw.waitLeaseState(t, tt.lease, "active")
}
