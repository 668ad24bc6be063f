package auth

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/auth/certchain"
)

// pki is the CA hierarchy of the verifier tests: root → intermediate → leaves,
// like the embedded smallstep CA, plus an unrelated root.
type pki struct {
	root, inter, other *testCA
}

func newPKI(t testing.TB) pki {
	root := newRoot(t, "DSTM Test Root")
	inter := newCAWithin(t, "DSTM Test Intermediate", root, testNow.AddDate(-1, 0, 0), testNow.AddDate(1, 0, 0))
	return pki{root: root, inter: inter, other: newRoot(t, "Other Root")}
}

func alice(s certSpec) certSpec {
	s.cn, s.email = "alice@corp", []string{"alice@corp"}
	return s
}

func newTestVerifier(t testing.TB, p pki, revoked revokedSet, pol PolicyConfig, extra ...Check) *Verifier {
	t.Helper()
	policy, err := NewPolicy(pol)
	if err != nil {
		t.Fatal(err)
	}
	return newTestVerifierWith(t, p, VerifierConfig{Revocations: revoked, Policy: policy, Extra: extra})
}

// newTestVerifierWith builds a verifier from cfg, with p's root, no revocations, the default
// policy and the fixed clock where cfg leaves them out.
func newTestVerifierWith(t testing.TB, p pki, cfg VerifierConfig) *Verifier {
	t.Helper()
	if cfg.Roots == nil {
		cfg.Roots = []*x509.Certificate{p.root.cert}
	}
	if cfg.Revocations == nil {
		cfg.Revocations = revokedSet{}
	}
	if cfg.Policy == nil {
		cfg.Policy, _ = NewPolicy(PolicyConfig{})
	}
	if cfg.Now == nil {
		cfg.Now = fixedClock
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifier(t *testing.T) {
	p := newPKI(t)
	expiredInter := newCAWithin(t, "Expired Intermediate", p.root, testNow.AddDate(-2, 0, 0), testNow.AddDate(0, 0, -1))
	leaf := func(ca *testCA, s certSpec) *x509.Certificate { c, _ := ca.issue(t, s); return c }
	good := leaf(p.inter, alice(certSpec{}))
	host := leaf(p.inter, certSpec{cn: "laptop.corp", dns: []string{"laptop.corp"}})
	errFromExtra := errors.New("extra check says no")

	tests := []struct {
		name     string
		rawCerts [][]byte
		policy   PolicyConfig
		extra    []Check
		want     error
		identity string
		msg      string
	}{
		{name: "email identity with chain", rawCerts: raw(good, p.inter.cert), identity: "alice@corp"},
		{name: "dns identity", rawCerts: raw(host, p.inter.cert), identity: "laptop.corp"},
		{name: "leaf signed by root directly", rawCerts: raw(leaf(p.root, alice(certSpec{}))), identity: "alice@corp"},
		{name: "no certificate", rawCerts: nil, want: ErrNoCertificate},
		{name: "garbage DER", rawCerts: [][]byte{[]byte("not a certificate")}, want: ErrBadCertificate},
		{name: "garbage intermediate", rawCerts: [][]byte{good.Raw, {1, 2, 3}}, want: ErrBadCertificate, msg: "certificate 1"},
		{name: "missing intermediate", rawCerts: raw(good), want: ErrUnknownCA},
		{name: "other root", rawCerts: raw(leaf(p.other, alice(certSpec{}))), want: ErrUnknownCA, msg: "Other Root"},
		{name: "self-signed leaf presented as its own chain", rawCerts: raw(p.other.cert), want: ErrWrongUsage},
		{name: "expired", rawCerts: raw(leaf(p.inter, alice(certSpec{notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Second)})), p.inter.cert), want: ErrExpired, msg: "expired at"},
		{name: "not yet valid", rawCerts: raw(leaf(p.inter, alice(certSpec{notBefore: testNow.Add(time.Minute)})), p.inter.cert), want: ErrNotYetValid},
		{name: "expired intermediate", rawCerts: raw(leaf(expiredInter, alice(certSpec{})), expiredInter.cert), want: ErrExpired},
		{name: "revoked serial", rawCerts: raw(leaf(p.inter, alice(certSpec{serial: 666})), p.inter.cert), want: ErrRevoked, msg: "serial 666"},
		{name: "server auth only", rawCerts: raw(leaf(p.inter, alice(certSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})), p.inter.cert), want: ErrWrongUsage},
		{name: "no EKU", rawCerts: raw(leaf(p.inter, alice(certSpec{noEKU: true})), p.inter.cert), want: ErrWrongUsage},
		{name: "CN differs from SAN", rawCerts: raw(leaf(p.inter, certSpec{cn: "alice@corp", email: []string{"mallory@corp"}}), p.inter.cert), want: ErrBadIdentity},
		{name: "email CN with DNS SAN", rawCerts: raw(leaf(p.inter, certSpec{cn: "alice@corp", dns: []string{"alice.corp"}}), p.inter.cert), want: ErrBadIdentity},
		{name: "two SANs", rawCerts: raw(leaf(p.inter, certSpec{cn: "alice@corp", email: []string{"alice@corp"}, dns: []string{"alice.corp"}}), p.inter.cert), want: ErrBadIdentity},
		{name: "no SAN", rawCerts: raw(leaf(p.inter, certSpec{cn: "alice@corp"}), p.inter.cert), want: ErrBadIdentity},
		{name: "empty CN", rawCerts: raw(leaf(p.inter, certSpec{dns: []string{"x.corp"}}), p.inter.cert), want: ErrBadIdentity},
		{name: "refused unknown", rawCerts: raw(good, p.inter.cert), policy: PolicyConfig{Unknown: UnknownRefuse}, want: ErrNotAllowed},
		{name: "listed identity with refuse", rawCerts: raw(good, p.inter.cert), policy: PolicyConfig{Unknown: UnknownRefuse, Identities: map[string]IdentityRule{"alice@corp": {}}}, identity: "alice@corp"},
		{name: "extra check", rawCerts: raw(good, p.inter.cert), extra: []Check{func(time.Time, *Peer) error { return errFromExtra }}, want: errFromExtra},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, p, revokedSet{"666": true}, tc.policy, tc.extra...)
			peer, err := v.Verify(tc.rawCerts)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify: err = %v, want %v", err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			if vpcErr := v.VerifyPeerCertificate(tc.rawCerts, nil); !errors.Is(vpcErr, tc.want) || (err == nil) != (vpcErr == nil) {
				t.Errorf("VerifyPeerCertificate = %v, Verify = %v", vpcErr, err)
			}
			if err != nil {
				return
			}
			if peer.Identity.Name != tc.identity || peer.Identity.Mechanism != MechExternal {
				t.Errorf("identity = %+v, want %q EXTERNAL", peer.Identity, tc.identity)
			}
			if peer.Identity.Serial != peer.Leaf.SerialNumber.String() || !peer.Identity.NotAfter.Equal(peer.Leaf.NotAfter) {
				t.Errorf("identity serial/expiry %q %v do not match the leaf", peer.Identity.Serial, peer.Identity.NotAfter)
			}
			if len(peer.Chains) == 0 || !peer.Chains[0][len(peer.Chains[0])-1].Equal(p.root.cert) {
				t.Errorf("chains %v do not end at the root", peer.Chains)
			}
			if len(peer.Rule.Transports) == 0 {
				t.Errorf("rule not resolved: %+v", peer.Rule)
			}
		})
	}
}

// A chain the TLS stack claims to have verified is not trusted on its own.
func TestVerifyPeerCertificateIgnoresForeignVerifiedChains(t *testing.T) {
	p := newPKI(t)
	v := newTestVerifier(t, p, revokedSet{}, PolicyConfig{})
	foreign, _ := p.other.issue(t, alice(certSpec{}))
	err := v.VerifyPeerCertificate(raw(foreign), [][]*x509.Certificate{{foreign, p.other.cert}})
	if !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("err = %v, want ErrUnknownCA", err)
	}
	good, _ := p.inter.issue(t, alice(certSpec{}))
	if err := v.VerifyPeerCertificate(raw(good, p.inter.cert), [][]*x509.Certificate{{good, p.inter.cert, p.root.cert}}); err != nil {
		t.Fatalf("already verified good chain refused: %v", err)
	}
}

func TestVerifierConfiguredIntermediate(t *testing.T) {
	p := newPKI(t)
	v := newTestVerifierWith(t, p, VerifierConfig{Intermediates: []*x509.Certificate{p.inter.cert}})
	leaf, _ := p.inter.issue(t, alice(certSpec{}))
	if _, err := v.Verify(raw(leaf)); err != nil {
		t.Fatalf("leaf without chain, intermediate configured: %v", err)
	}
}

// With the intermediate configured, a chain through it takes certchain's short
// path (one signature verification); every refusal still holds.
func TestVerifierKnownIntermediate(t *testing.T) {
	p := newPKI(t)
	// Valid for the last half year, expired yesterday: verifiable against the
	// root, so it is known too.
	expiredInter := newCAWithin(t, "Expired Intermediate", p.root, testNow.AddDate(0, -6, 0), testNow.AddDate(0, 0, -1))
	twin := newCAWithin(t, p.inter.cert.Subject.CommonName, p.other, testNow.AddDate(-1, 0, 0), testNow.AddDate(1, 0, 0))
	known := []*x509.Certificate{p.inter.cert, expiredInter.cert}
	if n := certchain.New(certchain.Config{Roots: []*x509.Certificate{p.root.cert}, Known: known, Usage: x509.ExtKeyUsageClientAuth}).Known(); n != 2 {
		t.Fatalf("%d known intermediates, want 2", n)
	}
	v := newTestVerifierWith(t, p, VerifierConfig{Intermediates: known, Revocations: revokedSet{"666": true}})
	leaf := func(ca *testCA, s certSpec) *x509.Certificate { c, _ := ca.issue(t, s); return c }
	good := leaf(p.inter, alice(certSpec{}))
	tests := []struct {
		name     string
		rawCerts [][]byte
		want     error
	}{
		{name: "our chain", rawCerts: raw(good, p.inter.cert)},
		{name: "leaf alone", rawCerts: raw(good)},
		{name: "wrong leaf signature", rawCerts: [][]byte{badSignature(good.Raw), p.inter.cert.Raw}, want: ErrUnknownCA},
		{name: "expired intermediate", rawCerts: raw(leaf(expiredInter, alice(certSpec{})), expiredInter.cert), want: ErrExpired},
		{name: "same-subject intermediate of another CA, ours presented", rawCerts: raw(leaf(twin, alice(certSpec{})), p.inter.cert), want: ErrUnknownCA},
		{name: "same-subject intermediate of another CA, its own presented", rawCerts: raw(leaf(twin, alice(certSpec{})), twin.cert), want: ErrUnknownCA},
		{name: "revoked serial", rawCerts: raw(leaf(p.inter, alice(certSpec{serial: 666})), p.inter.cert), want: ErrRevoked},
		{name: "server auth only", rawCerts: raw(leaf(p.inter, alice(certSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})), p.inter.cert), want: ErrWrongUsage},
		{name: "expired leaf", rawCerts: raw(leaf(p.inter, alice(certSpec{notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Second)})), p.inter.cert), want: ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			peer, err := v.Verify(tc.rawCerts)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify: err = %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			if ch := peer.Chains[0]; len(ch) != 3 || !ch[1].Equal(p.inter.cert) || !ch[2].Equal(p.root.cert) {
				t.Errorf("chain %v, want leaf, intermediate, root", ch)
			}
		})
	}
}

// badSignature returns der with one bit of its signature (the last byte)
// flipped; it still parses.
func badSignature(der []byte) []byte {
	out := append([]byte(nil), der...)
	out[len(out)-1] ^= 1
	return out
}

func TestNewVerifierRequires(t *testing.T) {
	p := newPKI(t)
	policy, _ := NewPolicy(PolicyConfig{})
	roots := []*x509.Certificate{p.root.cert}
	for name, cfg := range map[string]VerifierConfig{
		"roots":       {Revocations: revokedSet{}, Policy: policy},
		"revocations": {Roots: roots, Policy: policy},
		"policy":      {Roots: roots, Revocations: revokedSet{}},
	} {
		if _, err := NewVerifier(cfg); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(name, "s")) {
			t.Errorf("missing %s: err = %v", name, err)
		}
	}
}

func TestCheckValidityBoundaries(t *testing.T) {
	leaf := &x509.Certificate{NotBefore: testNow, NotAfter: testNow.Add(time.Hour)}
	tests := []struct {
		now  time.Time
		want error
	}{
		{testNow.Add(-time.Nanosecond), ErrNotYetValid},
		{testNow, nil},
		{testNow.Add(time.Hour), nil},
		{testNow.Add(time.Hour + time.Nanosecond), ErrExpired},
	}
	check := CheckValidity()
	for _, tc := range tests {
		if err := check(tc.now, &Peer{Leaf: leaf}); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("at %v: err = %v, want %v", tc.now, err, tc.want)
		}
	}
}

func TestCheckPolicyUsesHolder(t *testing.T) {
	allowAll, _ := NewPolicy(PolicyConfig{})
	refuse, _ := NewPolicy(PolicyConfig{Unknown: UnknownRefuse})
	h := NewPolicyHolder(allowAll)
	check := CheckPolicy(h)
	peer := &Peer{Identity: Identity{Name: "alice@corp"}}
	if err := check(testNow, peer); err != nil {
		t.Fatalf("default policy refused: %v", err)
	}
	h.Store(refuse)
	if err := check(testNow, peer); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("after reload: err = %v, want ErrNotAllowed", err)
	}
	if err := CheckPolicy(&PolicyHolder{})(testNow, peer); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("empty holder: err = %v, want ErrNotAllowed", err)
	}
}

func TestReason(t *testing.T) {
	tests := map[error]string{
		nil:                                      "ok",
		ErrRevoked:                               "revoked",
		errors.Join(errors.New("x"), ErrExpired): "expired",
		errors.New("something"):                  "other",
		ErrNoCertificate:                         "no_certificate",
		ErrNotAllowed:                            "not_allowed",
	}
	for err, want := range tests {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	p := newPKI(b)
	benchmarkVerify(b, p, newTestVerifier(b, p, revokedSet{}, PolicyConfig{}))
}

// benchmarkVerify measures v on a leaf of p's intermediate, sent with its chain.
func benchmarkVerify(b *testing.B, p pki, v *Verifier) {
	leaf, _ := p.inter.issue(b, alice(certSpec{}))
	rc := raw(leaf, p.inter.cert)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(rc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyKnownIntermediate is BenchmarkVerify with the intermediate
// configured, as the gateway configures its CA's: one signature verification
// instead of two.
func BenchmarkVerifyKnownIntermediate(b *testing.B) {
	p := newPKI(b)
	benchmarkVerify(b, p, newTestVerifierWith(b, p, VerifierConfig{Intermediates: []*x509.Certificate{p.inter.cert}}))
}
