package enroll

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/certstest"
	"github.com/dstmgw/dstm/internal/fsutil"
)

// testState is the State a client enrolled with ca would load.
func testState(t *testing.T, ca *certstest.CA) *State {
	t.Helper()
	cert := ca.IssueClient(t, "alice@corp.example")
	der, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseState(fsutil.EncodePEM("EC PRIVATE KEY", der), fsutil.EncodePEM("CERTIFICATE", cert.Certificate...), fsutil.EncodePEM("CERTIFICATE", ca.Root.Raw))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// handshake runs a TLS handshake between client and a server presenting
// cert, over loopback TCP; it returns the client's error.
func handshake(t *testing.T, client *tls.Config, cert tls.Certificate) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc, err := ln.Accept()
		if err != nil {
			return
		}
		defer sc.Close()
		_ = sc.SetDeadline(time.Now().Add(10 * time.Second))
		_ = tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}).Handshake()
	}()
	cc, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_ = cc.SetDeadline(time.Now().Add(10 * time.Second))
	cerr := tls.Client(cc, client).Handshake()
	cc.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server handshake did not end")
	}
	return cerr
}

// withChain returns cert presenting chain instead of its own.
func withChain(cert tls.Certificate, chain ...[]byte) tls.Certificate {
	cert.Certificate = chain
	return cert
}

// ClientTLSConfig verifies the gateway with certchain (the intermediate of
// our own chain checked once) and comes to the same verdict as crypto/tls's
// own verification against the pinned root.
func TestClientTLSConfigVerifiesGateway(t *testing.T) {
	ca := certstest.New(t)
	twin := certstest.New(t) // same subject names as ca (both named after the test), other keys
	st := testState(t, ca)
	if st.server == nil || st.server.Known() != 1 {
		t.Fatalf("the chain's intermediate is not known")
	}
	good := ca.IssueServer(t, "gw.example", "2001:db8::1")
	twinCert := twin.IssueServer(t, "gw.example")
	badSig := append([]byte(nil), good.Certificate[0]...)
	badSig[len(badSig)-1] ^= 1
	expired := ca.Issue(t, certstest.Spec{
		DNSNames: []string{"gw.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
	})
	clientOnly := ca.Issue(t, certstest.Spec{DNSNames: []string{"gw.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	tests := []struct {
		name       string
		serverName string
		cert       tls.Certificate
		ok         bool
	}{
		{name: "DNS name", serverName: "gw.example", cert: good, ok: true},
		{name: "IP address", serverName: "2001:db8::1", cert: good, ok: true},
		{name: "other name", serverName: "other.example", cert: good},
		{name: "wrong leaf signature", serverName: "gw.example", cert: withChain(good, badSig, ca.Intermediate.Raw)},
		{name: "expired", serverName: "gw.example", cert: expired},
		{name: "clientAuth only", serverName: "gw.example", cert: clientOnly},
		{name: "another CA's intermediate of the same name", serverName: "gw.example", cert: twinCert},
		{name: "another CA's leaf with our intermediate", serverName: "gw.example", cert: withChain(twinCert, twinCert.Certificate[0], ca.Intermediate.Raw)},
		{name: "no intermediate sent", serverName: "gw.example", cert: withChain(good, good.Certificate[0])},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := st.ClientTLSConfig(tc.serverName)
			if !cfg.InsecureSkipVerify || cfg.VerifyConnection == nil {
				t.Fatal("the configuration does not verify with certchain")
			}
			err := handshake(t, cfg, tc.cert)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake: %v, want ok = %v", err, tc.ok)
			}
			var cve *tls.CertificateVerificationError
			if err != nil && !errors.As(err, &cve) {
				t.Errorf("error %v is not a tls.CertificateVerificationError", err)
			}
			std := &tls.Config{ServerName: tc.serverName, RootCAs: st.Roots, Certificates: cfg.Certificates}
			if stdErr := handshake(t, std, tc.cert); (stdErr == nil) != tc.ok {
				t.Errorf("crypto/tls's own verification: %v, want ok = %v", stdErr, tc.ok)
			}
		})
	}
}

// Without a server name, crypto/tls verifies (and takes the name from the
// dialled address).
func TestClientTLSConfigWithoutServerName(t *testing.T) {
	st := testState(t, certstest.New(t))
	cfg := st.ClientTLSConfig("", "tsp/2")
	if cfg.InsecureSkipVerify || cfg.VerifyConnection != nil || cfg.RootCAs != st.Roots {
		t.Fatalf("InsecureSkipVerify %v, VerifyConnection set %v", cfg.InsecureSkipVerify, cfg.VerifyConnection != nil)
	}
}
