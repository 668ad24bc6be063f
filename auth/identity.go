package auth

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Mechanism is the SASL mechanism by which an identity was authenticated.
type Mechanism string

// The SASL mechanisms the gateway knows.
const (
	// MechExternal: identity from a verified TLS/DTLS client certificate.
	MechExternal Mechanism = "EXTERNAL"
	// MechPlain: user name and password (RFC 4616).
	MechPlain Mechanism = "PLAIN"
	// MechDigestMD5: user name and digest response (RFC 2831).
	MechDigestMD5 Mechanism = "DIGEST-MD5"
	// MechAnonymous: no credentials; the name is the client's IPv6 address.
	MechAnonymous Mechanism = "ANONYMOUS"
)

// MaxIdentityLen is the maximum length of an identity in bytes.
const MaxIdentityLen = 255

// Identity is an authenticated peer.
type Identity struct {
	// Name is the identity used for policy, leases and logs (field `identity`).
	Name string
	// Mechanism is how Name was authenticated.
	Mechanism Mechanism
	// Serial is the certificate serial number in decimal (big.Int.String(),
	// the form smallstep stores and revokes); empty unless Mechanism is EXTERNAL.
	Serial string
	// NotAfter is the certificate's expiry; zero unless Mechanism is EXTERNAL.
	NotAfter time.Time
}

// ValidIdentity reports whether s is a syntactically valid identity: 1 to 255
// bytes of valid UTF-8, every rune printable and none of them a space or a
// control character. Colons are allowed (ANONYMOUS names are IPv6 addresses);
// the htdigest store rejects them itself because its format cannot hold them.
func ValidIdentity(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrBadIdentity)
	case len(s) > MaxIdentityLen:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrBadIdentity, len(s), MaxIdentityLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrBadIdentity, s)
	}
	for i, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%w: %q has a space or non-printable character at byte %d", ErrBadIdentity, s, i)
		}
	}
	return nil
}

// IdentityFromCertificate derives the identity of a certificate issued from
// an enrollment token: the subject CommonName, which must be valid
// (ValidIdentity) and equal the certificate's single subject alternative
// name — an email SAN when the name contains '@', a DNS SAN otherwise. Any
// other SAN, or more than one, is refused with ErrBadIdentity. It does not
// verify the certificate; use a Verifier for that.
func IdentityFromCertificate(c *x509.Certificate) (Identity, error) {
	if c == nil {
		return Identity{}, ErrNoCertificate
	}
	cn := c.Subject.CommonName
	if err := ValidIdentity(cn); err != nil {
		return Identity{}, fmt.Errorf("certificate subject common name: %w", err)
	}
	if err := checkSingleSAN(c, cn); err != nil {
		return Identity{}, err
	}
	serial := ""
	if c.SerialNumber != nil {
		serial = c.SerialNumber.String()
	}
	return Identity{Name: cn, Mechanism: MechExternal, Serial: serial, NotAfter: c.NotAfter}, nil
}

func checkSingleSAN(c *x509.Certificate, cn string) error {
	n := len(c.DNSNames) + len(c.EmailAddresses) + len(c.IPAddresses) + len(c.URIs)
	if n != 1 {
		return fmt.Errorf("%w: certificate for %q has %d subject alternative names, want exactly 1", ErrBadIdentity, cn, n)
	}
	kind, san := "DNS", c.DNSNames
	if strings.Contains(cn, "@") {
		kind, san = "email", c.EmailAddresses
	}
	if len(san) != 1 || san[0] != cn {
		return fmt.Errorf("%w: certificate common name %q does not match its %s subject alternative name", ErrBadIdentity, cn, kind)
	}
	return nil
}

// SASLIdentity returns the identity of a user authenticated with PLAIN or
// DIGEST-MD5 (the authentication identity, i.e. the user name). The caller
// has already checked the credentials, e.g. with a DigestStore.
func SASLIdentity(mech Mechanism, user string) (Identity, error) {
	if mech != MechPlain && mech != MechDigestMD5 {
		return Identity{}, fmt.Errorf("%w: mechanism %q does not carry a user name", ErrBadIdentity, mech)
	}
	if err := ValidIdentity(user); err != nil {
		return Identity{}, fmt.Errorf("%s user name: %w", mech, err)
	}
	return Identity{Name: user, Mechanism: mech}, nil
}

// AnonymousIdentity returns the identity of an ANONYMOUS client: its IPv6
// address in canonical text form, without zone and without port, so that a
// client reconnecting from a new source port keeps its identity (and with it
// its sticky lease). IPv4-mapped addresses are unmapped.
func AnonymousIdentity(client netip.Addr) (Identity, error) {
	if !client.IsValid() {
		return Identity{}, fmt.Errorf("%w: invalid anonymous client address", ErrBadIdentity)
	}
	name := client.Unmap().WithZone("").String()
	return Identity{Name: name, Mechanism: MechAnonymous}, nil
}
