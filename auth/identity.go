package auth

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Mechanism is the SASL mechanism by which an identity was authenticated.
type Mechanism string

// The SASL mechanisms the gateway knows.
const (
	MechExternal  Mechanism = "EXTERNAL"   // a verified client certificate
	MechPlain     Mechanism = "PLAIN"      // RFC 4616
	MechDigestMD5 Mechanism = "DIGEST-MD5" // RFC 2831
	MechAnonymous Mechanism = "ANONYMOUS"  // the name is the client's IPv6 address
)

// MaxIdentityLen is the maximum length of an identity in bytes.
const MaxIdentityLen = 255

// Identity is an authenticated peer.
type Identity struct {
	Name      string // for policy, leases and logs (field `identity`)
	Mechanism Mechanism
	// Serial (decimal) and NotAfter are the certificate's, for EXTERNAL.
	Serial   string
	NotAfter time.Time
	// Groups are the policy groups the certificate carries (its
	// organizational units, set at a sign-in from the directory).
	Groups []string
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

// IdentityFromCertificate returns the identity of an enrolled certificate:
// its CommonName, which must be valid and equal its single SAN (e-mail when
// the name contains '@', DNS otherwise). It does not verify the certificate.
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
	var groups []string
	for _, g := range c.Subject.OrganizationalUnit {
		if ValidIdentity(g) == nil && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return Identity{Name: cn, Mechanism: MechExternal, Serial: serial, NotAfter: c.NotAfter, Groups: groups}, nil
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

// SASLIdentity returns the identity of a user whose PLAIN or DIGEST-MD5
// credentials the caller has checked.
func SASLIdentity(mech Mechanism, user string) (Identity, error) {
	if mech != MechPlain && mech != MechDigestMD5 {
		return Identity{}, fmt.Errorf("%w: mechanism %q does not carry a user name", ErrBadIdentity, mech)
	}
	if err := ValidIdentity(user); err != nil {
		return Identity{}, fmt.Errorf("%s user name: %w", mech, err)
	}
	return Identity{Name: user, Mechanism: mech}, nil
}

// AnonymousIdentity returns the identity of an ANONYMOUS client: its address
// without zone or port, so that a client reconnecting from a new port keeps
// its identity and sticky lease.
func AnonymousIdentity(client netip.Addr) (Identity, error) {
	if !client.IsValid() {
		return Identity{}, fmt.Errorf("%w: invalid anonymous client address", ErrBadIdentity)
	}
	name := client.Unmap().WithZone("").String()
	return Identity{Name: name, Mechanism: MechAnonymous}, nil
}
