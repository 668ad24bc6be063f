package certchain

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs/certstest"
)

var testNow = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// mint signs tmpl with parent (self-signed if nil) for key's public key.
func mint(t testing.TB, tmpl *x509.Certificate, parent *ca, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if parent == nil {
		return certstest.Mint(t, tmpl, nil, key, &key.PublicKey)
	}
	return certstest.Mint(t, tmpl, parent.cert, parent.key, &key.PublicKey)
}

// caSpec is a CA certificate; zero times mean a year around testNow.
type caSpec struct {
	name                string
	notBefore, notAfter time.Time
	eku                 []x509.ExtKeyUsage
	permittedDNS        []string
	maxPathLenZero      bool
}

func newCA(t testing.TB, parent *ca, s caSpec) *ca {
	t.Helper()
	if s.notBefore.IsZero() {
		s.notBefore = testNow.AddDate(-1, 0, 0)
	}
	if s.notAfter.IsZero() {
		s.notAfter = testNow.AddDate(1, 0, 0)
	}
	key := certstest.NewKey(t)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: s.name},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		ExtKeyUsage:           s.eku,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        s.maxPathLenZero,
		PermittedDNSDomains:   s.permittedDNS,
	}
	return &ca{cert: mint(t, tmpl, parent, key), key: key}
}

// leafSpec is a leaf; zero fields get a day around testNow and clientAuth.
type leafSpec struct {
	dns                 []string
	ips                 []net.IP
	eku                 []x509.ExtKeyUsage
	notBefore, notAfter time.Time
	requireExplicit     bool
}

func (c *ca) issue(t testing.TB, s leafSpec) *x509.Certificate {
	t.Helper()
	if s.notBefore.IsZero() {
		s.notBefore = testNow.Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = testNow.Add(23 * time.Hour)
	}
	if s.eku == nil {
		s.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "leaf"},
		DNSNames:    s.dns,
		IPAddresses: s.ips,
		NotBefore:   s.notBefore,
		NotAfter:    s.notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: s.eku,
	}
	if s.requireExplicit {
		// policyConstraints (RFC 5280 4.2.1.11): SEQUENCE { requireExplicitPolicy [0] 0 }
		tmpl.ExtraExtensions = []pkix.Extension{{Id: []int{2, 5, 29, 36}, Value: []byte{0x30, 0x03, 0x80, 0x01, 0x00}}}
		tmpl.Policies = []x509.OID{mustOID(t, "1.2.3.4")}
	}
	return mint(t, tmpl, c, certstest.NewKey(t))
}

func mustOID(t testing.TB, s string) x509.OID {
	t.Helper()
	o, err := x509.ParseOID(s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// badSignature returns c with one bit of its signature flipped.
func badSignature(t testing.TB, c *x509.Certificate) *x509.Certificate {
	t.Helper()
	der := append([]byte(nil), c.Raw...)
	der[len(der)-1] ^= 1 // the last byte of the ECDSA signature's s
	bad, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// hierarchy is root → inter, plus a second root whose intermediate has the
// same subject as ours.
type hierarchy struct {
	root, inter, otherRoot, twin *ca
}

func newHierarchy(t testing.TB) hierarchy {
	root := newCA(t, nil, caSpec{name: "Test Root"})
	otherRoot := newCA(t, nil, caSpec{name: "Other Root"})
	return hierarchy{
		root:      root,
		inter:     newCA(t, root, caSpec{name: "Test Intermediate"}),
		otherRoot: otherRoot,
		twin:      newCA(t, otherRoot, caSpec{name: "Test Intermediate"}),
	}
}

// The short path accepts exactly our chain and refuses everything else;
// Verify then refuses too, through the full verification.
func TestShortPath(t *testing.T) {
	h := newHierarchy(t)
	expiredInter := newCA(t, h.root, caSpec{name: "Expired Intermediate", notBefore: testNow.AddDate(0, -6, 0), notAfter: testNow.Add(-time.Second)})
	expiredRoot := newCA(t, nil, caSpec{name: "Expired Root", notBefore: testNow.AddDate(-2, 0, 0), notAfter: testNow.Add(-time.Second)})
	interOfExpiredRoot := newCA(t, expiredRoot, caSpec{name: "Intermediate of the expired root", notBefore: testNow.AddDate(-2, 0, 0)})
	good := h.inter.issue(t, leafSpec{})
	server := h.inter.issue(t, leafSpec{dns: []string{"gw.example"}, ips: []net.IP{net.ParseIP("2001:db8::1")}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})

	tests := []struct {
		name      string
		roots     []*x509.Certificate // default: h.root
		known     []*x509.Certificate // default: h.inter
		unknown   bool                // known is not eligible
		usage     x509.ExtKeyUsage    // default: clientAuth
		leaf      *x509.Certificate
		presented []*x509.Certificate
		dnsName   string
		short     bool  // the short path accepts
		want      error // Verify's error, matched with errors.As by type
	}{
		{name: "our chain", leaf: good, presented: []*x509.Certificate{h.inter.cert}, short: true},
		{name: "server name", usage: x509.ExtKeyUsageServerAuth, leaf: server, presented: []*x509.Certificate{h.inter.cert}, dnsName: "gw.example", short: true},
		{name: "server IP", usage: x509.ExtKeyUsageServerAuth, leaf: server, presented: []*x509.Certificate{h.inter.cert}, dnsName: "2001:db8::1", short: true},
		{name: "wrong server name", usage: x509.ExtKeyUsageServerAuth, leaf: server, presented: []*x509.Certificate{h.inter.cert}, dnsName: "other.example", want: x509.HostnameError{}},
		{name: "wrong leaf signature", leaf: badSignature(t, good), presented: []*x509.Certificate{h.inter.cert}, want: x509.UnknownAuthorityError{}},
		{name: "expired intermediate", known: []*x509.Certificate{expiredInter.cert}, leaf: expiredInter.issue(t, leafSpec{}), presented: []*x509.Certificate{expiredInter.cert}, want: x509.CertificateInvalidError{}},
		{name: "expired root", roots: []*x509.Certificate{expiredRoot.cert}, known: []*x509.Certificate{interOfExpiredRoot.cert}, leaf: interOfExpiredRoot.issue(t, leafSpec{}), presented: []*x509.Certificate{interOfExpiredRoot.cert}, want: x509.CertificateInvalidError{}},
		{name: "twin intermediate presented as ours", leaf: h.twin.issue(t, leafSpec{}), presented: []*x509.Certificate{h.inter.cert}, want: x509.UnknownAuthorityError{}},
		{name: "twin intermediate presented", leaf: h.twin.issue(t, leafSpec{}), presented: []*x509.Certificate{h.twin.cert}, want: x509.UnknownAuthorityError{}},
		{name: "twin intermediate as known", known: []*x509.Certificate{h.twin.cert}, unknown: true, leaf: h.twin.issue(t, leafSpec{}), presented: []*x509.Certificate{h.twin.cert}, want: x509.UnknownAuthorityError{}},
		{name: "wrong EKU", leaf: h.inter.issue(t, leafSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), presented: []*x509.Certificate{h.inter.cert}, want: x509.CertificateInvalidError{}},
		{name: "expired leaf", leaf: h.inter.issue(t, leafSpec{notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Second)}), presented: []*x509.Certificate{h.inter.cert}, want: x509.CertificateInvalidError{}},
		{name: "leaf not yet valid", leaf: h.inter.issue(t, leafSpec{notBefore: testNow.Add(time.Second)}), presented: []*x509.Certificate{h.inter.cert}, want: x509.CertificateInvalidError{}},
		{name: "our intermediate as the leaf", usage: x509.ExtKeyUsageAny, leaf: h.inter.cert, presented: []*x509.Certificate{h.inter.cert}},
		{name: "no intermediate presented", leaf: good, want: x509.UnknownAuthorityError{}},
		{name: "an unknown certificate presented too", leaf: good, presented: []*x509.Certificate{h.inter.cert, h.twin.cert}},
		{name: "leaf requiring an explicit policy", leaf: h.inter.issue(t, leafSpec{requireExplicit: true}), presented: []*x509.Certificate{h.inter.cert}, want: x509.CertificateInvalidError{}},
		{name: "leaf signed by the root", leaf: h.root.issue(t, leafSpec{}), presented: []*x509.Certificate{h.inter.cert}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			roots, known, usage := tc.roots, tc.known, tc.usage
			if roots == nil {
				roots = []*x509.Certificate{h.root.cert}
			}
			if known == nil {
				known = []*x509.Certificate{h.inter.cert}
			}
			if usage == 0 {
				usage = x509.ExtKeyUsageClientAuth
			}
			v := New(Config{Roots: roots, Known: known, Usage: usage})
			if (v.Known() == 0) != tc.unknown {
				t.Fatalf("%d known intermediates, unknown = %v", v.Known(), tc.unknown)
			}
			chains, short := v.short(tc.leaf, tc.presented, testNow, tc.dnsName)
			if short != tc.short {
				t.Fatalf("short path accepted = %v, want %v", short, tc.short)
			}
			if short && (len(chains) != 1 || len(chains[0]) != 3 || chains[0][0] != tc.leaf || !chains[0][2].Equal(roots[0])) {
				t.Errorf("short path chains = %v, want leaf, intermediate, root", chains)
			}
			chains, err := v.Verify(tc.leaf, tc.presented, testNow, tc.dnsName)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if last := chains[0][len(chains[0])-1]; !last.Equal(roots[0]) {
					t.Errorf("chain ends at %q, not the root", last.Subject.CommonName)
				}
				return
			}
			if err == nil || !sameType(err, tc.want) {
				t.Fatalf("Verify: err = %v (%T), want a %T", err, err, tc.want)
			}
			// The refusal is the full verification's, as without a short path.
			_, fullErr := v.full(tc.leaf, tc.presented, testNow, tc.dnsName)
			if fullErr == nil || fullErr.Error() != err.Error() {
				t.Errorf("Verify: %v, full verification: %v", err, fullErr)
			}
		})
	}
}

func sameType(err, want error) bool {
	switch want.(type) {
	case x509.UnknownAuthorityError:
		var e x509.UnknownAuthorityError
		return errors.As(err, &e)
	case x509.CertificateInvalidError:
		var e x509.CertificateInvalidError
		return errors.As(err, &e)
	case x509.HostnameError:
		var e x509.HostnameError
		return errors.As(err, &e)
	}
	return false
}

// Only intermediates whose chain to the roots is plain become known.
func TestKnownIntermediates(t *testing.T) {
	h := newHierarchy(t)
	pathZeroRoot := newCA(t, nil, caSpec{name: "Root without intermediates", maxPathLenZero: true})
	tests := []struct {
		name  string
		roots []*x509.Certificate
		known *x509.Certificate
		usage x509.ExtKeyUsage
		want  bool
	}{
		{name: "ours", known: h.inter.cert, want: true},
		{name: "another root's", known: h.twin.cert},
		{name: "a root", known: h.root.cert},
		{name: "a leaf", known: h.inter.issue(t, leafSpec{})},
		{name: "EKU without clientAuth", known: newCA(t, h.root, caSpec{name: "Servers only", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).cert},
		{name: "EKU with serverAuth, for servers", usage: x509.ExtKeyUsageServerAuth, known: newCA(t, h.root, caSpec{name: "Servers only", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).cert, want: true},
		{name: "name constraints", known: newCA(t, h.root, caSpec{name: "Constrained", permittedDNS: []string{"example.com"}}).cert},
		{name: "below another intermediate", known: newCA(t, h.inter, caSpec{name: "Grandchild"}).cert},
		{name: "root allows no intermediate", roots: []*x509.Certificate{pathZeroRoot.cert}, known: newCA(t, pathZeroRoot, caSpec{name: "Too deep"}).cert},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			roots, usage := tc.roots, tc.usage
			if roots == nil {
				roots = []*x509.Certificate{h.root.cert}
			}
			if usage == 0 {
				usage = x509.ExtKeyUsageClientAuth
			}
			v := New(Config{Roots: roots, Intermediates: []*x509.Certificate{h.inter.cert}, Known: []*x509.Certificate{tc.known}, Usage: usage})
			if got := v.Known() == 1; got != tc.want {
				t.Errorf("known = %v, want %v", got, tc.want)
			}
		})
	}
}

// Configured intermediates serve a peer that sends only its leaf.
func TestConfiguredIntermediates(t *testing.T) {
	h := newHierarchy(t)
	v := New(Config{Roots: []*x509.Certificate{h.root.cert}, Intermediates: []*x509.Certificate{h.inter.cert}, Usage: x509.ExtKeyUsageClientAuth})
	if _, err := v.Verify(h.inter.issue(t, leafSpec{}), nil, testNow, ""); err != nil {
		t.Fatalf("leaf alone, intermediate configured: %v", err)
	}
}

func BenchmarkVerify(b *testing.B) {
	h := newHierarchy(b)
	leaf := h.inter.issue(b, leafSpec{})
	presented := []*x509.Certificate{h.inter.cert}
	for _, bc := range []struct {
		name  string
		known []*x509.Certificate
	}{{"full", nil}, {"known intermediate", presented}} {
		b.Run(bc.name, func(b *testing.B) {
			v := New(Config{Roots: []*x509.Certificate{h.root.cert}, Known: bc.known, Usage: x509.ExtKeyUsageClientAuth})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(leaf, presented, testNow, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Recheck skips the signatures of a known chain and nothing that depends on the time.
func TestRecheck(t *testing.T) {
	h := newHierarchy(t)
	good := h.inter.issue(t, leafSpec{})
	expiringInter := newCA(t, h.root, caSpec{name: "Expiring Intermediate", notBefore: testNow.AddDate(0, -6, 0), notAfter: testNow.Add(time.Hour)})
	expiringRoot := newCA(t, nil, caSpec{name: "Expiring Root", notAfter: testNow.Add(time.Hour)})
	interOfExpiringRoot := newCA(t, expiringRoot, caSpec{name: "Intermediate of the expiring root"})
	tests := []struct {
		name      string
		root      *ca // default: h.root
		known     *ca // default: h.inter
		leaf      *x509.Certificate
		presented []*x509.Certificate
		at        time.Duration // after testNow
		ok        bool
	}{
		{name: "our chain", leaf: good, presented: []*x509.Certificate{h.inter.cert}, ok: true},
		// Only a chain accepted before reaches Recheck; this one shows the signature is not
		// verified again.
		{name: "leaf signature not verified again", leaf: badSignature(t, good), presented: []*x509.Certificate{h.inter.cert}, ok: true},
		{name: "expired leaf", leaf: h.inter.issue(t, leafSpec{notBefore: testNow.Add(-48 * time.Hour), notAfter: testNow.Add(-time.Second)}), presented: []*x509.Certificate{h.inter.cert}},
		{name: "intermediate expired since", known: expiringInter, leaf: expiringInter.issue(t, leafSpec{notAfter: testNow.Add(48 * time.Hour)}), presented: []*x509.Certificate{expiringInter.cert}, at: 2 * time.Hour},
		{name: "root expired since", root: expiringRoot, known: interOfExpiringRoot, leaf: interOfExpiringRoot.issue(t, leafSpec{notAfter: testNow.Add(48 * time.Hour)}), presented: []*x509.Certificate{interOfExpiringRoot.cert}, at: 2 * time.Hour},
		{name: "before the root expires", root: expiringRoot, known: interOfExpiringRoot, leaf: interOfExpiringRoot.issue(t, leafSpec{notAfter: testNow.Add(48 * time.Hour)}), presented: []*x509.Certificate{interOfExpiringRoot.cert}, ok: true},
		{name: "wrong EKU", leaf: h.inter.issue(t, leafSpec{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), presented: []*x509.Certificate{h.inter.cert}},
		{name: "leaf of another intermediate", leaf: h.twin.issue(t, leafSpec{}), presented: []*x509.Certificate{h.inter.cert}},
		{name: "unknown intermediate: full verification", leaf: h.twin.issue(t, leafSpec{}), presented: []*x509.Certificate{h.twin.cert}},
		{name: "unknown bad signature: full verification", leaf: badSignature(t, h.twin.issue(t, leafSpec{})), presented: []*x509.Certificate{h.inter.cert, h.twin.cert}},
		{name: "nothing presented: full verification", leaf: good, ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, known := tc.root, tc.known
			if root == nil {
				root = h.root
			}
			if known == nil {
				known = h.inter
			}
			v := New(Config{Roots: []*x509.Certificate{root.cert}, Known: []*x509.Certificate{known.cert}, Usage: x509.ExtKeyUsageClientAuth})
			if v.Known() != 1 {
				t.Fatal("the intermediate is not known")
			}
			chains, err := v.Recheck(tc.leaf, tc.presented, testNow.Add(tc.at))
			if (err == nil) != tc.ok {
				t.Fatalf("Recheck: %v, want ok %v", err, tc.ok)
			}
			if tc.ok && (len(chains) != 1 || len(chains[0]) != 3 || !chains[0][2].Equal(root.cert)) {
				t.Errorf("chains %v, want leaf, intermediate, root", chains)
			}
		})
	}
}
