package certs

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// maxIdentityLen bounds an identity (an e-mail address or a DNS name).
const maxIdentityLen = 253

// NormalizeIdentity validates an identity, an e-mail address (with a
// conservative local-part alphabet) or a DNS name, and returns it in lower
// case.
func NormalizeIdentity(identity string) (string, error) {
	id := strings.ToLower(identity)
	if id == "" || len(id) > maxIdentityLen {
		return "", fmt.Errorf("%w: %q: length must be 1..%d", ErrBadIdentity, identity, maxIdentityLen)
	}
	local, domain, isEmail := strings.Cut(id, "@")
	if !isEmail {
		if _, err := netip.ParseAddr(id); err == nil {
			return "", fmt.Errorf("%w: %q: IP addresses are not identities", ErrBadIdentity, identity)
		}
		if err := validateDNSName(id); err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrBadIdentity, identity, err)
		}
		return id, nil
	}
	if err := validateLocalPart(local); err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrBadIdentity, identity, err)
	}
	if err := validateDNSName(domain); err != nil {
		return "", fmt.Errorf("%w: %q: domain: %v", ErrBadIdentity, identity, err)
	}
	return id, nil
}

func isEmailIdentity(id string) bool { return strings.Contains(id, "@") }

func validateLocalPart(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("local part must be 1..64 characters")
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return fmt.Errorf("misplaced '.' in local part")
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && !strings.ContainsRune(".!#$%&'*+/=?^_`{|}~-", rune(c)) {
			return fmt.Errorf("character %q not allowed in local part", c)
		}
	}
	return nil
}

// validateDNSName accepts LDH names without trailing dot or wildcard.
func validateDNSName(s string) error {
	if s == "" || len(s) > maxIdentityLen {
		return fmt.Errorf("DNS name must be 1..%d characters", maxIdentityLen)
	}
	for label := range strings.SplitSeq(s, ".") {
		if err := validateLabel(label); err != nil {
			return err
		}
	}
	return nil
}

func validateLabel(l string) error {
	if l == "" || len(l) > 63 {
		return fmt.Errorf("DNS label must be 1..63 characters")
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("DNS label %q starts or ends with '-'", l)
	}
	for _, c := range []byte(l) {
		if !isAlnum(c) && c != '-' {
			return fmt.Errorf("character %q not allowed in DNS name", c)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// maxSerialDigits bounds a decimal serial (RFC 5280 serials are at most 20
// octets, < 49 decimal digits).
const maxSerialDigits = 49

// ParseSerial accepts a certificate serial in decimal (smallstep's and
// this package's canonical form), as 0x-prefixed hex, or as colon-separated
// hex bytes (as openssl prints it), and returns the decimal form.
func ParseSerial(s string) (string, error) {
	s = strings.TrimSpace(s)
	base, digits := 10, s
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		base, digits = 16, s[2:]
	case strings.Contains(s, ":"):
		base, digits = 16, strings.ReplaceAll(s, ":", "")
	}
	if digits == "" || len(digits) > maxSerialDigits || strings.ContainsAny(digits, "+-_ ") {
		return "", fmt.Errorf("%w: %q", ErrBadSerial, s)
	}
	n, ok := new(big.Int).SetString(digits, base)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("%w: %q", ErrBadSerial, s)
	}
	return n.String(), nil
}
