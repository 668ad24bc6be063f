package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
)

func TestServerCertificate(t *testing.T) {
	clk := newClock()
	ca, dir := newCA(t, clk)
	cert, err := ca.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if !slices.Equal(leaf.DNSNames, []string{"gw.dstm.test"}) || len(leaf.IPAddresses) != 2 ||
		!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("server cert names %v %v EKU %v", leaf.DNSNames, leaf.IPAddresses, leaf.ExtKeyUsage)
	}
	inter := x509.NewCertPool()
	inter.AddCert(ca.Intermediate())
	for _, name := range []string{"gw.dstm.test", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.RootPool(), Intermediates: inter, CurrentTime: clk.Now()}); err != nil {
			t.Errorf("server cert for %s: %v", name, err)
		}
	}
	// Reopen with the same names keeps it; other names re-issue it.
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}
	same, err := certs.Open(dir, testOptions(clk))
	if err != nil {
		t.Fatal(err)
	}
	if !same.ServerCertificate().Leaf.Equal(leaf) {
		t.Error("reopen re-issued an unchanged server certificate")
	}
	_ = same.Close()
	opts := testOptions(clk)
	opts.DNSNames = []string{"gw2.dstm.test"}
	renamed, err := certs.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer renamed.Close()
	if got := renamed.ServerCertificate().Leaf.DNSNames; !slices.Equal(got, opts.DNSNames) {
		t.Errorf("renamed server cert has %v", got)
	}
}

func TestServerCertificateRotatesInGetCertificate(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	first := ca.ServerCertificate().Leaf
	clk.Advance(5 * 24 * time.Hour) // past 2/3 of 7 days
	cert, err := ca.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf.Equal(first) || !cert.Leaf.NotBefore.After(first.NotBefore) {
		t.Fatal("GetCertificate served a certificate due for renewal")
	}
}

func TestServerCertificateRun(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ca.Run(ctx) }()
	first := ca.ServerCertificate().Leaf
	waitFor(t, func() bool { return clk.Waiters() > 0 })
	clk.Advance(5 * 24 * time.Hour)
	waitFor(t, func() bool { return !ca.ServerCertificate().Leaf.Equal(first) })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// waitFor polls cond (cheap, in-memory) until it holds or 5 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		<-tick.C
	}
}

func TestServerTLSConfigHandshake(t *testing.T) {
	ca, _ := newCA(t, newClock())
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerTLSConfig("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
		&tls.Config{RootCAs: ca.RootPool(), ServerName: "gw.dstm.test", NextProtos: []string{"x"}})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	_ = c.Close()
}
