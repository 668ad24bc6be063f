package certstest_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/certstest"
)

func TestHandshakeAndIdentity(t *testing.T) {
	ca := certstest.New(t)
	other := certstest.New(t)
	tests := []struct {
		name   string
		client *tls.Config
		ok     bool
	}{
		{"own client", ca.ClientTLSConfig(t, "alice@corp.example", "gw.test"), true},
		{"foreign client", other.ClientTLSConfig(t, "alice@corp.example", "gw.test"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srvCfg := ca.ServerTLSConfig(t, "gw.test", "127.0.0.1")
			tc.client.RootCAs = ca.Pool()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			srvErr := make(chan error, 1)
			go func() {
				b, err := ln.Accept()
				if err != nil {
					srvErr <- err
					return
				}
				s := tls.Server(b, srvCfg)
				err = s.Handshake()
				if err == nil && s.ConnectionState().PeerCertificates[0].Subject.CommonName != "alice@corp.example" {
					err = errWrongPeer
				}
				srvErr <- err
				_ = s.Close()
			}()
			a, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			cerr := tls.Client(a, tc.client).Handshake()
			var serr error
			select {
			case serr = <-srvErr:
			case <-time.After(5 * time.Second):
				t.Fatal("server handshake stuck")
			}
			if ok := cerr == nil && serr == nil; ok != tc.ok {
				t.Fatalf("client %v server %v, want ok=%v", cerr, serr, tc.ok)
			}
		})
	}
}

type peerErr string

func (e peerErr) Error() string { return string(e) }

const errWrongPeer = peerErr("wrong peer identity")

func TestClientSpecAndRevocation(t *testing.T) {
	ca := certstest.New(t)
	c := ca.IssueClient(t, "host.corp.example")
	if c.Leaf.DNSNames[0] != "host.corp.example" || c.Leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("leaf %v %v", c.Leaf.DNSNames, c.Leaf.ExtKeyUsage)
	}
	expired := ca.Issue(t, certstest.Spec{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	inter := x509.NewCertPool()
	inter.AddCert(ca.Intermediate)
	if _, err := expired.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter}); err == nil {
		t.Error("expired certificate verifies")
	}
	s := c.Leaf.SerialNumber.String()
	if ca.IsRevoked(s) {
		t.Fatal("revoked too early")
	}
	ca.Revoke(s)
	if !ca.IsRevoked(s) || len(ca.Fingerprint()) != 64 {
		t.Error("Revoke/Fingerprint")
	}
}
