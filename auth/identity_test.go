package auth

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestValidIdentity(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"alice@corp", true},
		{"laptop.corp.example", true},
		{"2001:db8::1", true},
		{"josé@corp", true},
		{"a", true},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{"", false},
		{"alice smith", false},
		{"alice\tsmith", false},
		{"alice\n", false},
		{"\x00", false},
		{"\x7f", false},
		{"a\u00a0b", false}, // no-break space
		{"a\u2028b", false}, // line separator
		{"\xff\xfe", false}, // not UTF-8
		{"a\u200bb", false}, // zero width space: format char, not printable
	}
	for _, tc := range tests {
		err := ValidIdentity(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ValidIdentity(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadIdentity) {
			t.Errorf("ValidIdentity(%q) error %v does not wrap ErrBadIdentity", tc.in, err)
		}
	}
}

func TestIdentityFromCertificate(t *testing.T) {
	uri, _ := url.Parse("spiffe://corp/alice")
	cert := func(cn string, mod func(*x509.Certificate)) *x509.Certificate {
		c := &x509.Certificate{SerialNumber: big.NewInt(0x1234), Subject: pkix.Name{CommonName: cn}, NotAfter: testNow}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want error
	}{
		{"email", cert("alice@corp", func(c *x509.Certificate) { c.EmailAddresses = []string{"alice@corp"} }), nil},
		{"dns", cert("gw.corp", func(c *x509.Certificate) { c.DNSNames = []string{"gw.corp"} }), nil},
		{"nil", nil, ErrNoCertificate},
		{"email in DNS SAN", cert("alice@corp", func(c *x509.Certificate) { c.DNSNames = []string{"alice@corp"} }), ErrBadIdentity},
		{"dns in email SAN", cert("gw.corp", func(c *x509.Certificate) { c.EmailAddresses = []string{"gw.corp"} }), ErrBadIdentity},
		{"case differs", cert("Alice@corp", func(c *x509.Certificate) { c.EmailAddresses = []string{"alice@corp"} }), ErrBadIdentity},
		{"extra IP SAN", cert("gw.corp", func(c *x509.Certificate) {
			c.DNSNames = []string{"gw.corp"}
			c.IPAddresses = append(c.IPAddresses, netip.MustParseAddr("192.0.2.1").AsSlice())
		}), ErrBadIdentity},
		{"extra URI SAN", cert("gw.corp", func(c *x509.Certificate) { c.DNSNames = []string{"gw.corp"}; c.URIs = []*url.URL{uri} }), ErrBadIdentity},
		{"CN with space", cert("alice smith", func(c *x509.Certificate) { c.DNSNames = []string{"alice smith"} }), ErrBadIdentity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := IdentityFromCertificate(tc.cert)
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && (id.Name != tc.cert.Subject.CommonName || id.Serial != "4660" || id.Mechanism != MechExternal || !id.NotAfter.Equal(testNow)) {
				t.Errorf("identity = %+v", id)
			}
		})
	}
}

func TestSASLIdentity(t *testing.T) {
	tests := []struct {
		mech Mechanism
		user string
		ok   bool
	}{
		{MechPlain, "bob", true},
		{MechDigestMD5, "bob@corp", true},
		{MechExternal, "bob", false},
		{MechAnonymous, "bob", false},
		{MechPlain, "", false},
		{MechDigestMD5, "bo b", false},
	}
	for _, tc := range tests {
		id, err := SASLIdentity(tc.mech, tc.user)
		if (err == nil) != tc.ok {
			t.Errorf("SASLIdentity(%s, %q) = %v, want ok=%v", tc.mech, tc.user, err, tc.ok)
		}
		if err == nil && (id.Name != tc.user || id.Mechanism != tc.mech || id.Serial != "") {
			t.Errorf("SASLIdentity(%s, %q) = %+v", tc.mech, tc.user, id)
		}
	}
}

func TestAnonymousIdentity(t *testing.T) {
	tests := []struct {
		in   netip.Addr
		want string
	}{
		{netip.MustParseAddr("2001:DB8:0:0::1"), "2001:db8::1"},
		{netip.MustParseAddr("fe80::1%eth0"), "fe80::1"},
		{netip.MustParseAddr("::ffff:192.0.2.1"), "192.0.2.1"},
	}
	for _, tc := range tests {
		id, err := AnonymousIdentity(tc.in)
		if err != nil || id.Name != tc.want || id.Mechanism != MechAnonymous {
			t.Errorf("AnonymousIdentity(%v) = %+v, %v; want %q", tc.in, id, err, tc.want)
		}
		if err := ValidIdentity(id.Name); err != nil {
			t.Errorf("anonymous identity %q invalid: %v", id.Name, err)
		}
	}
	if _, err := AnonymousIdentity(netip.Addr{}); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("zero address: err = %v", err)
	}
}
