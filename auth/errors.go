package auth

import "errors"

// Sentinel errors. Every error returned by a Verifier or a Policy wraps exactly
// one of them, so callers test with errors.Is and map to a metric label with
// Reason.
var (
	ErrNoCertificate  = errors.New("auth: no client certificate")
	ErrBadCertificate = errors.New("auth: bad certificate")
	ErrUnknownCA      = errors.New("auth: certificate not issued by a trusted CA")
	ErrExpired        = errors.New("auth: certificate expired") // or a CA of its chain
	ErrNotYetValid    = errors.New("auth: certificate not yet valid")
	ErrWrongUsage     = errors.New("auth: certificate not valid for client authentication")
	ErrRevoked        = errors.New("auth: certificate revoked")
	// ErrBadIdentity: the identity is invalid, or the certificate's subject
	// and subject alternative name disagree.
	ErrBadIdentity = errors.New("auth: invalid identity")
	ErrNotAllowed  = errors.New("auth: identity not allowed by policy")
)

// Reason returns a stable label for err, for metrics and the `reason` log
// field: "ok" for nil, the sentinel's name in snake case (unknown_ca, …), or
// "other".
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
