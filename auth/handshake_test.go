package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

// handshakeResult is what the server side of a test handshake saw.
type handshakeResult struct {
	state tls.ConnectionState
	err   error
}

// tlsPair holds the fixed parts of the handshake tests.
type tlsPair struct {
	p      pki
	server tls.Certificate
}

func newTLSPair(t *testing.T) tlsPair {
	p := newPKI(t)
	cert, key := p.inter.issue(t, certSpec{cn: "gw.test", dns: []string{"gw.test"}, serial: 1,
		eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return tlsPair{p: p, server: tls.Certificate{Certificate: raw(cert, p.inter.cert), PrivateKey: key}}
}

func (tp tlsPair) clientCert(t *testing.T, s certSpec) []tls.Certificate {
	cert, key := tp.p.inter.issue(t, s)
	return []tls.Certificate{{Certificate: raw(cert, tp.p.inter.cert), PrivateKey: key}}
}

func (tp tlsPair) clientConfig(certs []tls.Certificate, cache tls.ClientSessionCache) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(tp.p.root.cert)
	return &tls.Config{
		RootCAs: roots, ServerName: "gw.test", Certificates: certs,
		ClientSessionCache: cache, Time: fixedClock, MinVersion: tls.VersionTLS13,
	}
}

// handshake runs one TLS handshake over loopback TCP and returns the server
// side's result. The server writes one byte after a successful handshake so
// that the client receives its session ticket.
func handshake(t *testing.T, server, client *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	res := make(chan handshakeResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- handshakeResult{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Write([]byte{1})
		}
		res <- handshakeResult{state: tc.ConnectionState(), err: err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	if tc.Handshake() == nil {
		_, _ = tc.Read(make([]byte, 1)) // the byte, or the server's alert
	}
	select {
	case r := <-res:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("server handshake did not finish")
		return handshakeResult{}
	}
}

func TestTLSHandshake(t *testing.T) {
	tp := newTLSPair(t)
	revoked := revokedSet{"666": true}
	tests := []struct {
		name     string
		certs    []tls.Certificate
		optional bool
		want     error // nil: accepted; errAny: refused by crypto/tls itself
		identity string
	}{
		{name: "accepted", certs: tp.clientCert(t, alice(certSpec{})), identity: "alice@corp"},
		{name: "revoked", certs: tp.clientCert(t, alice(certSpec{serial: 666})), want: ErrRevoked},
		{name: "expired", certs: tp.clientCert(t, alice(certSpec{notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Hour)})), want: ErrExpired},
		{name: "wrong EKU", certs: tp.clientCert(t, alice(certSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})), want: ErrWrongUsage},
		{name: "CN/SAN mismatch", certs: tp.clientCert(t, certSpec{cn: "alice@corp", email: []string{"bob@corp"}}), want: ErrBadIdentity},
		{name: "no certificate, required", want: errAny},
		{name: "no certificate, optional", optional: true, want: nil},
		{name: "certificate optional but bad", optional: true, certs: tp.clientCert(t, alice(certSpec{serial: 666})), want: ErrRevoked},
		{name: "certificate optional and good", optional: true, certs: tp.clientCert(t, alice(certSpec{})), identity: "alice@corp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, tp.p, revoked, PolicyConfig{})
			base := &tls.Config{Certificates: []tls.Certificate{tp.server}, Time: fixedClock, MinVersion: tls.VersionTLS13}
			server := v.TLSConfig(base)
			if tc.optional {
				server = v.OptionalTLSConfig(base)
			}
			if base.VerifyConnection != nil || base.ClientAuth != tls.NoClientCert {
				t.Fatal("TLSConfig modified its base")
			}
			r := handshake(t, server, tp.clientConfig(tc.certs, nil))
			switch {
			case tc.want == errAny:
				if r.err == nil {
					t.Fatal("handshake without certificate accepted")
				}
				return
			case !errors.Is(r.err, tc.want) || (r.err == nil) != (tc.want == nil):
				t.Fatalf("server handshake err = %v, want %v", r.err, tc.want)
			case r.err != nil:
				return
			}
			id, err := v.IdentityFromState(r.state)
			if tc.identity == "" {
				if !errors.Is(err, ErrNoCertificate) {
					t.Fatalf("IdentityFromState without certificate: %+v, %v", id, err)
				}
				return
			}
			if err != nil || id.Name != tc.identity || id.Mechanism != MechExternal {
				t.Fatalf("IdentityFromState = %+v, %v", id, err)
			}
		})
	}
}

// errAny marks a case refused by crypto/tls before the verifier runs.
var errAny = errors.New("any error")

// A session ticket must not let a revoked certificate back in:
// VerifyConnection runs on resumption too.
func TestTLSResumptionRechecksRevocation(t *testing.T) {
	tp := newTLSPair(t)
	revoked := revokedSet{}
	v := newTestVerifier(t, tp.p, revoked, PolicyConfig{})
	server := v.TLSConfig(&tls.Config{Certificates: []tls.Certificate{tp.server}, Time: fixedClock, MinVersion: tls.VersionTLS13})
	cert := tp.clientCert(t, alice(certSpec{serial: 4242}))
	client := tp.clientConfig(cert, tls.NewLRUClientSessionCache(4))

	if r := handshake(t, server, client); r.err != nil || r.state.DidResume {
		t.Fatalf("first handshake: resumed=%v err=%v", r.state.DidResume, r.err)
	}
	if r := handshake(t, server, client); r.err != nil || !r.state.DidResume {
		t.Fatalf("second handshake should resume: resumed=%v err=%v", r.state.DidResume, r.err)
	}
	revoked["4242"] = true
	if r := handshake(t, server, client); !errors.Is(r.err, ErrRevoked) {
		t.Fatalf("resumption after revocation: err = %v, want ErrRevoked", r.err)
	}
}
