package sasl

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Mechanism names a SASL mechanism as on the wire, in upper case.
type Mechanism string

// The mechanisms this package implements.
const (
	Anonymous Mechanism = "ANONYMOUS"
	Plain     Mechanism = "PLAIN"
	DigestMD5 Mechanism = "DIGEST-MD5"
	External  Mechanism = "EXTERNAL"
)

// ParseMechanism maps a mechanism name in any case to a known Mechanism.
func ParseMechanism(s string) (Mechanism, error) {
	m := Mechanism(strings.ToUpper(s))
	switch m {
	case Anonymous, Plain, DigestMD5, External:
		return m, nil
	}
	return "", fmt.Errorf("sasl: unknown mechanism %q", s)
}

// Credentials is what the server mechanisms need from a credential store.
// Implementations must compare secrets in constant time.
type Credentials interface {
	// VerifyPlain reports whether pass is user's password.
	VerifyPlain(user, pass string) bool
	// DigestHA1 returns MD5(user ":" realm ":" password) (the htdigest
	// format) and whether the user exists in that realm.
	DigestHA1(user, realm string) ([16]byte, bool)
}

// MaxFieldLen bounds each PLAIN field and each DIGEST-MD5 directive value.
const MaxFieldLen = 255

// ErrMalformed is wrapped by every error for a message of bad syntax.
var ErrMalformed = errors.New("sasl: malformed message")

// ParsePlain splits a SASL PLAIN message (RFC 4616: authzid NUL authcid NUL
// passwd, no line terminator); authcid and passwd must not be empty.
func ParsePlain(msg []byte) (authzid, user, pass string, err error) {
	if bytes.Count(msg, []byte{0}) != 2 {
		return "", "", "", fmt.Errorf("%w: PLAIN needs exactly two NULs", ErrMalformed)
	}
	f := bytes.SplitN(msg, []byte{0}, 3)
	if len(f[1]) == 0 || len(f[2]) == 0 {
		return "", "", "", fmt.Errorf("%w: PLAIN empty user or password", ErrMalformed)
	}
	for _, x := range f {
		if len(x) > MaxFieldLen {
			return "", "", "", fmt.Errorf("%w: PLAIN field too long", ErrMalformed)
		}
	}
	return string(f[0]), string(f[1]), string(f[2]), nil
}

// EncodePlain builds a SASL PLAIN message (without line terminator).
func EncodePlain(authzid, user, pass string) []byte {
	b := make([]byte, 0, len(authzid)+len(user)+len(pass)+2)
	b = append(b, authzid...)
	b = append(b, 0)
	b = append(b, user...)
	b = append(b, 0)
	return append(b, pass...)
}
