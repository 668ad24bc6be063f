package certs_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
)

// TestCertificates: an identity's certificates, newest first, with issue and expiry times,
// the renewal link and the revocation; other identities' are not listed; Certificate finds
// one by serial in any notation.
func TestCertificates(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		ca, _ := newCA(t, newClock())
		checkCertificates(t, ca)
	})
	t.Run("etcd", func(t *testing.T) {
		cli := etcdClient(t, etcdtest.Start(t, 1))
		first, dir := newCA(t, newClock())
		first.Close()
		checkCertificates(t, openShared(t, dir, cli, "/list/"))
	})
}

func checkCertificates(t *testing.T, ca *certs.CA) {
	const id = "alice@corp.example"
	old, _ := enrollIdentity(t, ca, id)
	laptop, _ := enrollIdentity(t, ca, id)
	bob, _ := enrollIdentity(t, ca, "bob@corp.example")
	renewed, err := ca.Renew(t.Context(), laptop[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Revoke(t.Context(), old[0].SerialNumber.String(), "lost"); err != nil {
		t.Fatal(err)
	}
	got, err := ca.Certificates("Alice@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d certificates of %s, want 3: %+v", len(got), id, got)
	}
	bySerial := map[string]certs.Certificate{}
	for i, c := range got {
		bySerial[c.Serial] = c
		if c.Identity != id || c.NotBefore.IsZero() || !c.NotAfter.After(c.NotBefore) {
			t.Errorf("certificate %d: %+v", i, c)
		}
		if i > 0 && c.NotAfter.After(got[i-1].NotAfter) {
			t.Errorf("not newest first: %v after %v", c.NotAfter, got[i-1].NotAfter)
		}
	}
	r := bySerial[renewed[0].SerialNumber.String()]
	if r.RenewalOf != laptop[0].SerialNumber.String() || r.Revoked {
		t.Errorf("renewal: %+v", r)
	}
	if !r.NotBefore.Equal(renewed[0].NotBefore) || !r.NotAfter.Equal(renewed[0].NotAfter) {
		t.Errorf("renewal times %v..%v, certificate's %v..%v", r.NotBefore, r.NotAfter, renewed[0].NotBefore, renewed[0].NotAfter)
	}
	o := bySerial[old[0].SerialNumber.String()]
	if !o.Revoked || o.Reason != "lost" || o.RevokedAt.IsZero() || time.Since(o.RevokedAt) > time.Hour {
		t.Errorf("revoked certificate: %+v", o)
	}
	if _, ok := bySerial[bob[0].SerialNumber.String()]; ok {
		t.Error("bob's certificate listed as alice's")
	}

	one, err := ca.Certificate("0x" + bob[0].SerialNumber.Text(16))
	if err != nil || one.Identity != "bob@corp.example" || one.Serial != bob[0].SerialNumber.String() {
		t.Errorf("Certificate(bob's) = %+v, %v", one, err)
	}
	if _, err := ca.Certificate("12345"); !errors.Is(err, certs.ErrUnknownSerial) {
		t.Errorf("Certificate(unknown) error %v, want ErrUnknownSerial", err)
	}
	if none, err := ca.Certificates("carol@corp.example"); err != nil || len(none) != 0 {
		t.Errorf("Certificates(carol) = %v, %v; want none", none, err)
	}
	if _, err := ca.Certificates("not an identity"); !errors.Is(err, certs.ErrBadIdentity) {
		t.Errorf("Certificates(bad) error %v, want ErrBadIdentity", err)
	}
}
