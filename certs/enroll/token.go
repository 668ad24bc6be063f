package enroll

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxTokenBytes bounds the size of an enrollment token.
const MaxTokenBytes = 8 << 10

// TokenClaims are the parts of an enrollment token the client needs. They are
// read without verifying the signature: the client cannot verify it and does
// not need to, the gateway does.
type TokenClaims struct {
	Identity    string    // "sub": the identity the certificate will carry
	SANs        []string  // "sans": the names the CSR must request
	Fingerprint string    // "sha": SHA-256 fingerprint of the gateway's root
	Expiry      time.Time // "exp"
}

type rawClaims struct {
	Subject string   `json:"sub"`
	SANs    []string `json:"sans"`
	SHA     string   `json:"sha"`
	Expiry  *int64   `json:"exp"`
}

// ErrMalformedToken reports a token that is not a compact JWS with the
// claims the enrollment needs.
var ErrMalformedToken = errors.New("malformed enrollment token")

// ParseToken decodes the payload of a compact JWS enrollment token without
// verifying it.
func ParseToken(token string) (TokenClaims, error) {
	token = strings.TrimSpace(token)
	if len(token) > MaxTokenBytes {
		return TokenClaims{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformedToken, MaxTokenBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return TokenClaims{}, fmt.Errorf("%w: want 3 dot-separated parts, got %d", ErrMalformedToken, len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return TokenClaims{}, fmt.Errorf("%w: payload: %v", ErrMalformedToken, err)
	}
	var rc rawClaims
	if err := json.Unmarshal(payload, &rc); err != nil {
		return TokenClaims{}, fmt.Errorf("%w: payload: %v", ErrMalformedToken, err)
	}
	return rc.claims()
}

func (rc rawClaims) claims() (TokenClaims, error) {
	if rc.Subject == "" {
		return TokenClaims{}, fmt.Errorf("%w: no subject", ErrMalformedToken)
	}
	sans := rc.SANs
	if len(sans) == 0 {
		sans = []string{rc.Subject}
	}
	c := TokenClaims{Identity: rc.Subject, SANs: sans, Fingerprint: NormalizeFingerprint(rc.SHA)}
	if rc.Expiry != nil {
		c.Expiry = time.Unix(*rc.Expiry, 0)
	}
	return c, nil
}
