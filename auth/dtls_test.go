package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// dtlsHandshake runs a pion/dtls handshake over loopback UDP with the
// verifier plugged in the way the gateway does, and returns the server
// side's error.
func dtlsHandshake(t *testing.T, v *Verifier, server tls.Certificate, client []tls.Certificate) error {
	t.Helper()
	ln, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithCertificates(server),
		dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithVerifyPeerCertificate(v.VerifyPeerCertificate),
		dtls.WithVerifyConnection(func(s *dtls.State) error {
			_, err := v.Verify(s.PeerCertificates)
			return err
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- err
			return
		}
		defer c.Close()
		res <- c.(*dtls.Conn).HandshakeContext(ctx)
	}()
	// The test certificates live at testNow; pion's client has no clock
	// option, so it cannot verify the server here. Not under test.
	c, err := dtls.DialWithOptions("udp", ln.Addr().(*net.UDPAddr),
		dtls.WithCertificates(client...),
		dtls.WithInsecureSkipVerify(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clientErr := make(chan error, 1)
	go func() { clientErr <- c.HandshakeContext(ctx) }()
	select {
	case err := <-res:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("DTLS server handshake did not finish")
		return nil
	}
}

func TestDTLSHandshake(t *testing.T) {
	tp := newTLSPair(t)
	v := newTestVerifier(t, tp.p, revokedSet{"666": true}, PolicyConfig{})
	tests := []struct {
		name  string
		certs []tls.Certificate
		want  error
	}{
		{"accepted", tp.clientCert(t, alice(certSpec{})), nil},
		{"revoked", tp.clientCert(t, alice(certSpec{serial: 666})), ErrRevoked},
		{"other CA", func() []tls.Certificate {
			c, k := tp.p.other.issue(t, alice(certSpec{}))
			return []tls.Certificate{{Certificate: raw(c), PrivateKey: k}}
		}(), ErrUnknownCA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := dtlsHandshake(t, v, tp.server, tc.certs)
			if (err == nil) != (tc.want == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("server handshake err = %v, want %v", err, tc.want)
			}
		})
	}
}
