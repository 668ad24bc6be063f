package auth

import "errors"

// Sentinel errors. Every error returned by a Verifier or a Policy wraps exactly
// one of them, so callers test with errors.Is and map to a metric label with
// Reason.
var (
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("auth: no client certificate")
	// ErrBadCertificate: the certificate could not be parsed or is otherwise unusable.
	ErrBadCertificate = errors.New("auth: bad certificate")
	// ErrUnknownCA: the certificate does not chain to a trusted root.
	ErrUnknownCA = errors.New("auth: certificate not issued by a trusted CA")
	// ErrExpired: the certificate (or one in its chain) is past its NotAfter.
	ErrExpired = errors.New("auth: certificate expired")
	// ErrNotYetValid: the certificate is before its NotBefore.
	ErrNotYetValid = errors.New("auth: certificate not yet valid")
	// ErrWrongUsage: the certificate is not valid for TLS client authentication.
	ErrWrongUsage = errors.New("auth: certificate not valid for client authentication")
	// ErrRevoked: the certificate's serial number has been revoked.
	ErrRevoked = errors.New("auth: certificate revoked")
	// ErrBadIdentity: the identity is syntactically invalid, or the certificate's
	// subject and subject alternative name disagree.
	ErrBadIdentity = errors.New("auth: invalid identity")
	// ErrNotAllowed: the identity is refused by policy.
	ErrNotAllowed = errors.New("auth: identity not allowed by policy")
)

// Reason returns a short stable label for err suitable for a metric label or
// the canonical `reason` log field: "ok" for nil, one of no_certificate,
// bad_certificate, unknown_ca, expired, not_yet_valid, wrong_usage, revoked,
// bad_identity, not_allowed for this package's errors, and "other" otherwise.
func Reason(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNoCertificate):
		return "no_certificate"
	case errors.Is(err, ErrBadCertificate):
		return "bad_certificate"
	case errors.Is(err, ErrUnknownCA):
		return "unknown_ca"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrNotYetValid):
		return "not_yet_valid"
	case errors.Is(err, ErrWrongUsage):
		return "wrong_usage"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	case errors.Is(err, ErrBadIdentity):
		return "bad_identity"
	case errors.Is(err, ErrNotAllowed):
		return "not_allowed"
	}
	return "other"
}
