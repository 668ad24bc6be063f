package certs_test

import (
	"crypto"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/certstest"
)

func TestEnrollIssuesClientCertificate(t *testing.T) {
	ca, _ := newCA(t, newClock())
	tests := []struct {
		identity    string
		wantEmail   []string
		wantDNS     []string
		normalizeTo string
	}{
		{identity: "alice@corp.example", wantEmail: []string{"alice@corp.example"}},
		{identity: "Bob@Corp.Example", wantEmail: []string{"bob@corp.example"}, normalizeTo: "bob@corp.example"},
		{identity: "laptop-7.corp.example", wantDNS: []string{"laptop-7.corp.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.identity, func(t *testing.T) {
			id := tc.identity
			if tc.normalizeTo != "" {
				id = tc.normalizeTo
			}
			tok, err := ca.Token(tc.identity, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			key := certstest.NewKey(t)
			chain, err := ca.Enroll(t.Context(), tok, csrFor(t, key, id, id))
			if err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			leaf := chain[0]
			if len(chain) != 2 || !chain[1].Equal(ca.Intermediate()) {
				t.Fatalf("chain is not leaf + intermediate")
			}
			if leaf.Subject.CommonName != id || !slices.Equal(leaf.EmailAddresses, tc.wantEmail) || !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Errorf("leaf names CN=%q email=%v dns=%v", leaf.Subject.CommonName, leaf.EmailAddresses, leaf.DNSNames)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("EKU %v, want client auth only", leaf.ExtKeyUsage)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 24*time.Hour || life > 24*time.Hour+2*time.Minute {
				t.Errorf("lifetime %v, want 24h (+backdate)", life)
			}
			if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(&key.PublicKey) {
				t.Errorf("leaf is not for the CSR key")
			}
			inter := x509.NewCertPool()
			inter.AddCert(chain[1])
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.RootPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("leaf does not verify: %v", err)
			}
		})
	}
}

func TestEnrollRefusals(t *testing.T) {
	clk := newClock()
	ca, _ := newCA(t, clk)
	other, _ := newCA(t, newClock())
	const id = "alice@corp.example"
	key := certstest.NewKey(t)
	good := csrFor(t, key, id, id)

	used, _ := ca.Token(id, time.Hour)
	if _, err := ca.Enroll(t.Context(), used, good); err != nil {
		t.Fatalf("first use: %v", err)
	}
	foreign, _ := other.Token(id, time.Hour)
	forgedCSR := csrFor(t, key, id, id)
	forgedCSR.Signature[len(forgedCSR.Signature)-3] ^= 0xff

	tests := []struct {
		name  string
		token func() string
		csr   *x509.CertificateRequest
		want  error
		msg   string
	}{
		{"token reuse", func() string { return used }, csrFor(t, certstest.NewKey(t), id, id), certs.ErrTokenUsed, "already used"},
		{"other name in CSR", tok(t, ca, id), csrFor(t, key, "mallory@corp.example", "mallory@corp.example"), certs.ErrIdentityMismatch, "mallory"},
		{"extra SAN", tok(t, ca, id), csrFor(t, key, id, id, "admin.corp.example"), certs.ErrIdentityMismatch, "admin.corp.example"},
		{"DNS SAN for e-mail identity", tok(t, ca, id), csrFor(t, key, id, "corp.example"), certs.ErrIdentityMismatch, "corp.example"},
		{"token from another CA", func() string { return foreign }, good, certs.ErrBadToken, "not signed by this gateway"},
		{"garbage token", func() string { return "a.b.c" }, good, certs.ErrBadToken, ""},
		{"empty token", func() string { return "" }, good, certs.ErrBadToken, ""},
		{"bad CSR signature", tok(t, ca, id), forgedCSR, certs.ErrBadCSR, "signature"},
		{"no CSR", tok(t, ca, id), nil, certs.ErrBadCSR, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.Enroll(t.Context(), tc.token(), tc.csr)
			t.Logf("refused: %v", err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

func tok(t *testing.T, ca *certs.CA, id string) func() string {
	t.Helper()
	s, err := ca.Token(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return func() string { return s }
}

func TestMismatchDoesNotSpendToken(t *testing.T) {
	ca, _ := newCA(t, newClock())
	const id = "alice@corp.example"
	token, _ := ca.Token(id, time.Hour)
	key := certstest.NewKey(t)
	if _, err := ca.Enroll(t.Context(), token, csrFor(t, key, "eve@corp.example", "eve@corp.example")); !errors.Is(err, certs.ErrIdentityMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := ca.Enroll(t.Context(), token, csrFor(t, key, id, id)); err != nil {
		t.Fatalf("token spent by a refused CSR: %v", err)
	}
}

func TestExpiredToken(t *testing.T) {
	t.Run("our clock", func(t *testing.T) {
		clk := newClock()
		ca, _ := newCA(t, clk)
		token, _ := ca.Token("alice@corp.example", time.Hour)
		clk.Advance(2 * time.Hour)
		_, err := ca.Enroll(t.Context(), token, csrFor(t, certstest.NewKey(t), "alice@corp.example", "alice@corp.example"))
		if !errors.Is(err, certs.ErrTokenExpired) || !strings.Contains(err.Error(), "expired at") {
			t.Fatalf("err %v, want ErrTokenExpired", err)
		}
	})
	t.Run("smallstep wall clock", func(t *testing.T) {
		// Our clock runs 3h behind: the token looks fresh to our pre-check,
		// smallstep's wall-clock check must still refuse it.
		clk := newClock()
		clk.Advance(-3 * time.Hour)
		ca, _ := newCA(t, clk)
		token, _ := ca.Token("alice@corp.example", time.Hour)
		_, err := ca.Enroll(t.Context(), token, csrFor(t, certstest.NewKey(t), "alice@corp.example", "alice@corp.example"))
		t.Logf("refused: %v", err)
		if !errors.Is(err, certs.ErrTokenExpired) {
			t.Fatalf("err %v, want ErrTokenExpired", err)
		}
	})
}

func TestTokenUsableAfterRestart(t *testing.T) {
	clk := newClock()
	ca, dir := newCA(t, clk)
	const id = "alice@corp.example"
	token, _ := ca.Token(id, time.Hour)
	spent, _ := ca.Token(id, time.Hour)
	if _, err := ca.Enroll(t.Context(), spent, csrFor(t, certstest.NewKey(t), id, id)); err != nil {
		t.Fatal(err)
	}
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}
	ca2, err := certs.Open(dir, testOptions(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	if _, err := ca2.Enroll(t.Context(), token, csrFor(t, certstest.NewKey(t), id, id)); err != nil {
		t.Fatalf("token issued before restart refused: %v", err)
	}
	if _, err := ca2.Enroll(t.Context(), spent, csrFor(t, certstest.NewKey(t), id, id)); !errors.Is(err, certs.ErrTokenUsed) {
		t.Fatalf("token spent before restart: %v, want ErrTokenUsed", err)
	}
}

func TestTokenCarriesFingerprint(t *testing.T) {
	ca, _ := newCA(t, newClock())
	token, _ := ca.Token("alice@corp.example", time.Hour)
	jws, err := jose.ParseSigned(token)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		SHA  string   `json:"sha"`
		Sub  string   `json:"sub"`
		SANs []string `json:"sans"`
		JTI  string   `json:"jti"`
	}
	if err := jws.Claims(ca.Root().PublicKey, &claims); err == nil {
		t.Fatalf("token verifies with the root key; want the provisioner key")
	}
	if err := jws.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	if claims.SHA != ca.Fingerprint() || claims.Sub != "alice@corp.example" || len(claims.JTI) != 32 {
		t.Errorf("claims %+v", claims)
	}
}
