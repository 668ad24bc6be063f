package certs_test

import (
	"crypto"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/certstest"
)

func TestRenew(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	const id = "alice@corp.example"
	chain, key := enrollIdentity(t, ca, id)

	renewed, err := ca.Renew(t.Context(), chain[0], nil)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	leaf := renewed[0]
	if leaf.SerialNumber.Cmp(chain[0].SerialNumber) == 0 || leaf.Subject.CommonName != id || leaf.EmailAddresses[0] != id {
		t.Errorf("renewed leaf serial %v CN %q", leaf.SerialNumber, leaf.Subject.CommonName)
	}
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(&key.PublicKey) {
		t.Errorf("renewal changed the key")
	}

	newK := certstest.NewKey(t)
	rekeyed, err := ca.Renew(t.Context(), leaf, csrFor(t, newK, id, id))
	if err != nil {
		t.Fatalf("rekey: %v", err)
	}
	if !rekeyed[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(&newK.PublicKey) {
		t.Errorf("rekey kept the old key")
	}
	// Renewed certificates are indexed under the identity.
	got, err := ca.RevokeIdentity(t.Context(), id)
	if err != nil || len(got) != 3 {
		t.Errorf("RevokeIdentity after renewals: %v %v, want 3 serials", got, err)
	}
}

func TestRenewRefusals(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	other, _ := newCA(t, newClock())
	const id = "alice@corp.example"

	revoked, _ := enrollIdentity(t, ca, id)
	if err := ca.Revoke(t.Context(), revoked[0].SerialNumber.String(), "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	foreign, _ := enrollIdentity(t, other, id)
	valid, _ := enrollIdentity(t, ca, id)
	badCSR := csrFor(t, certstest.NewKey(t), id, id)
	badCSR.Signature[10] ^= 0xff
	server := ca.ServerCertificate().Leaf

	tests := []struct {
		name string
		peer *x509.Certificate
		csr  *x509.CertificateRequest
		want error
	}{
		{"revoked", revoked[0], nil, certs.ErrRevoked},
		{"other CA", foreign[0], nil, certs.ErrUntrusted},
		{"no certificate", nil, nil, certs.ErrNoClientCert},
		{"server certificate", server, nil, certs.ErrUntrusted},
		{"rekey with forged CSR", valid[0], badCSR, certs.ErrBadCSR},
		{"rekey for another name", valid[0], csrFor(t, certstest.NewKey(t), "eve@corp.example", "eve@corp.example"), certs.ErrIdentityMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ca.Renew(t.Context(), tc.peer, tc.csr); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		clk.Advance(25 * time.Hour)
		defer clk.Advance(-25 * time.Hour)
		if _, err := ca.Renew(t.Context(), valid[0], nil); !errors.Is(err, certs.ErrCertExpired) {
			t.Fatalf("err %v, want ErrCertExpired", err)
		}
	})
}
