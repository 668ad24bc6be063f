package certs

import (
	"errors"
	"net/http"
)

// Errors returned by the CA. They are matched with errors.Is; the text after
// the sentinel explains the case.
var (
	ErrExists           = errors.New("a certificate authority already exists in this directory")
	ErrNotInitialized   = errors.New("no certificate authority")
	ErrLocked           = errors.New("certificate authority in use by another process (lock held)")
	ErrBadIdentity      = errors.New("invalid identity")
	ErrBadTTL           = errors.New("invalid token lifetime")
	ErrBadToken         = errors.New("invalid enrollment token")
	ErrTokenUsed        = errors.New("enrollment token already used")
	ErrTokenExpired     = errors.New("enrollment token expired")
	ErrBadCSR           = errors.New("invalid certificate request")
	ErrIdentityMismatch = errors.New("certificate request does not match the token's identity")
	ErrNoClientCert     = errors.New("no verified client certificate on this connection")
	ErrUntrusted        = errors.New("certificate not issued by this certificate authority")
	ErrCertExpired      = errors.New("certificate expired")
	ErrRevoked          = errors.New("certificate revoked")
	ErrUnknownSerial    = errors.New("no certificate with this serial was issued by this certificate authority")
	ErrUnknownIdentity  = errors.New("no certificate was issued for this identity")
	ErrAlreadyRevoked   = errors.New("certificate already revoked")
	ErrBadSerial        = errors.New("invalid serial number")
	ErrSSODisabled      = errors.New("single sign-on is not configured on this gateway")
	ErrSSODenied        = errors.New("sign-in refused by the gateway's policy")
	ErrSSOUnavailable   = errors.New("the identity provider could not be reached")
	ErrSSOReauth        = errors.New("sign in again")
	ErrSSORenew         = errors.New("certificate from a sign-in: renew it by signing in (dstm-client does with its refresh token)")
)

// HTTPStatus returns the status code the enrollment API uses for err, and
// whether err's text may be shown to the client (only for 4xx).
func HTTPStatus(err error) (int, bool) {
	switch {
	case errors.Is(err, ErrBadToken), errors.Is(err, ErrTokenUsed), errors.Is(err, ErrTokenExpired),
		errors.Is(err, ErrNoClientCert), errors.Is(err, ErrUntrusted):
		return http.StatusUnauthorized, true
	case errors.Is(err, ErrRevoked), errors.Is(err, ErrCertExpired), errors.Is(err, ErrIdentityMismatch),
		errors.Is(err, ErrSSODenied), errors.Is(err, ErrSSORenew), errors.Is(err, ErrSSOReauth):
		return http.StatusForbidden, true
	case errors.Is(err, ErrSSODisabled):
		return http.StatusNotFound, true
	case errors.Is(err, ErrSSOUnavailable):
		return http.StatusServiceUnavailable, true
	case errors.Is(err, ErrBadCSR), errors.Is(err, ErrBadIdentity):
		return http.StatusBadRequest, true
	default:
		return http.StatusInternalServerError, false
	}
}
