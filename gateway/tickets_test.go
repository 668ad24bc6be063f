package gateway_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/tsp"
)

// dialResuming opens TSP-SSL with the enrolled certificate and a session ticket cache.
func dialResuming(ctx context.Context, gw *testGW, st *enroll.State, cache tls.ClientSessionCache) (*tls.Conn, error) {
	cfg := st.ClientTLSConfig("localhost", "tsp/2")
	cfg.MinVersion = tls.VersionTLS13
	cfg.ClientSessionCache = cache
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: waitTimeout}}
	c, err := d.DialContext(ctx, "tcp", gw.tcp)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// ticketSession runs TSP-SSL EXTERNAL up to the offer (which also reads the tickets the
// gateway sent after the handshake) and closes the connection. It returns whether the TLS
// session was resumed and the identity the offered lease belongs to.
func ticketSession(t *testing.T, gw *testGW, st *enroll.State, cache tls.ClientSessionCache) (resumed bool, identity string) {
	t.Helper()
	c, err := dialResuming(testCtx(t), gw, st, cache)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := externalClient(t, tsp.TypeV4AnyV6)
	if _, err := streamSession(c, m); err != nil {
		t.Fatalf("TSP-SSL session: %v", err)
	}
	l, ok, err := gw.leaseOf(testCtx(t), m.Offer().Client.IPv4)
	if err != nil || !ok {
		t.Fatalf("offered lease %s: %v (found %v)", m.Offer().Client.IPv4, err, ok)
	}
	return c.ConnectionState().DidResume, l.Identity
}

// refused reports whether the gateway ends a tsp/2 connection instead of answering it.
func refused(t *testing.T, c *tls.Conn) bool {
	t.Helper()
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, _ = c.Write([]byte("VERSION=2.0.2\r\n"))
	_, err := c.Read(make([]byte, 256))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the gateway neither answered nor closed the connection")
	}
	return err != nil
}

func TestTLSResumption(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "erin@example.com")
	cache := tls.NewLRUClientSessionCache(4)
	if resumed, id := ticketSession(t, gw, st, cache); resumed || id != "erin@example.com" {
		t.Fatalf("first connection: resumed %v, identity %q", resumed, id)
	}
	// The resumed session authenticates the certificate of the full handshake.
	if resumed, id := ticketSession(t, gw, st, cache); !resumed || id != "erin@example.com" {
		t.Fatalf("second connection: resumed %v, identity %q; want a resumed session of erin@example.com", resumed, id)
	}
}

func TestTLSResumptionOfRevokedCertificateRefused(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "frank@example.com")
	cache := tls.NewLRUClientSessionCache(4)
	ticketSession(t, gw, st, cache)
	if _, err := gw.admin.Revoke(testCtx(t), "frank@example.com"); err != nil {
		t.Fatal(err)
	}
	c, err := dialResuming(testCtx(t), gw, st, cache)
	if err != nil {
		t.Fatal(err) // TLS 1.3: the client's handshake ends before the gateway's verdict
	}
	if !c.ConnectionState().DidResume {
		t.Fatal("the ticket was not used: this test checks a resumed handshake")
	}
	if !refused(t, c) {
		t.Fatal("a ticket of a revoked certificate still opens TSP-SSL")
	}
}

// A ticket of a certificate-less enrollment connection does not open TSP-SSL.
func TestTLSResumptionNeedsCertificate(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "grace@example.com")
	cache := tls.NewLRUClientSessionCache(4)
	cfg := st.ClientTLSConfig("localhost", "http/1.1")
	cfg.Certificates = nil
	cfg.MinVersion = tls.VersionTLS13
	cfg.ClientSessionCache = cache
	c, err := tls.Dial("tcp", gw.tcp, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// An HTTP exchange reads the tickets.
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	_, _ = c.Write([]byte("GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
	_, _ = c.Read(make([]byte, 4096))
	c.Close()
	noCert := st.ClientTLSConfig("localhost", "tsp/2")
	noCert.Certificates = nil
	noCert.MinVersion = tls.VersionTLS13
	noCert.ClientSessionCache = cache
	tc, err := tls.Dial("tcp", gw.tcp, noCert)
	if err != nil {
		t.Fatal(err)
	}
	if !tc.ConnectionState().DidResume {
		t.Fatal("the ticket was not used: this test checks a resumed handshake")
	}
	if !refused(t, tc) {
		t.Fatal("a certificate-less ticket opened TSP-SSL")
	}
}

// Tickets survive a restart: the ticket keys are in the state directory.
func TestTLSResumptionAfterRestart(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "heidi@example.com")
	cache := tls.NewLRUClientSessionCache(4)
	ticketSession(t, gw, st, cache)
	gw.stop()
	again := startGateway(t, func(c *config.Config) { c.StateDir = gw.cfg.StateDir })
	if resumed, id := ticketSession(t, again, st, cache); !resumed || id != "heidi@example.com" {
		t.Fatalf("after a restart: resumed %v, identity %q", resumed, id)
	}
}

// TLS 1.2 does not resume: its abbreviated handshake has no (EC)DHE.
func TestTLS12DoesNotResume(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "ivan@example.com")
	cfg := st.ClientTLSConfig("localhost", "tsp/2")
	cfg.MaxVersion = tls.VersionTLS12
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		c, err := tls.Dial("tcp", gw.tcp, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c.ConnectionState().Version != tls.VersionTLS12 || c.ConnectionState().DidResume {
			t.Errorf("connection %d: version %x, resumed %v; want TLS 1.2, a full handshake", i, c.ConnectionState().Version, c.ConnectionState().DidResume)
		}
		c.Close()
	}
}
