package certs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/dstmgw/dstm/certs/enroll"
)

// tokenLeeway is the clock skew tolerated on nbf/exp, as smallstep does.
const tokenLeeway = time.Minute

// tokenClaims is the payload of an enrollment token, shaped like step's
// one-time tokens so smallstep's JWK provisioner accepts it.
type tokenClaims struct {
	jose.Claims
	SANs []string `json:"sans"`
	SHA  string   `json:"sha"`
	// Groups are policy groups from a sign-in (EnrollSSO); the template
	// writes them as organizational units.
	Groups []string `json:"groups,omitempty"`
}

// Token returns a single-use enrollment token for identity, valid for ttl
// (0 means DefaultTokenTTL; at most Options.MaxTokenTTL). The token carries
// the root fingerprint in its "sha" claim so a client can pin the root from
// the token alone. It stays valid across restarts of the CA; once used (even
// by a failed signing after authorization) it is spent.
func (ca *CA) Token(identity string, ttl time.Duration) (string, error) {
	id, err := NormalizeIdentity(identity)
	if err != nil {
		return "", err
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Minute || ttl > ca.opts.MaxTokenTTL {
		return "", fmt.Errorf("%w: %v is outside 1m..%v", ErrBadTTL, ttl, ca.opts.MaxTokenTTL)
	}
	jti, err := randomID()
	if err != nil {
		return "", err
	}
	now := ca.opts.Now()
	c := tokenClaims{
		Claims: jose.Claims{
			ID: jti, Issuer: provisionerName, Subject: id,
			Audience:  jose.Audience{signAudience},
			NotBefore: jose.NewNumericDate(now), IssuedAt: jose.NewNumericDate(now),
			Expiry: jose.NewNumericDate(now.Add(ttl)),
		},
		SANs: []string{id},
		SHA:  ca.Fingerprint(),
	}
	return ca.signToken(c)
}

func (ca *CA) signToken(c tokenClaims) (string, error) {
	so := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", ca.kid)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ca.pki.provKey}, so)
	if err != nil {
		return "", fmt.Errorf("token signer: %w", err)
	}
	tok, err := jose.Signed(signer).Claims(c).CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// verifyToken checks signature, issuer, audience and time window with our
// clock, before smallstep marks the token used, so a forged token cannot
// burn a real one and a client mistake caught here keeps the token usable.
// It returns the identity.
func (ca *CA) verifyToken(token string) (string, error) {
	token = strings.TrimSpace(token)
	if token == "" || len(token) > enroll.MaxTokenBytes {
		return "", fmt.Errorf("%w: empty or oversized", ErrBadToken)
	}
	jws, err := jose.ParseSigned(token)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	var c tokenClaims
	if err := jws.Claims(&ca.pki.provKey.PublicKey, &c); err != nil {
		return "", fmt.Errorf("%w: not signed by this gateway (%v)", ErrBadToken, err)
	}
	err = c.ValidateWithLeeway(jose.Expected{Issuer: provisionerName, Time: ca.opts.Now()}, tokenLeeway)
	switch {
	case errors.Is(err, jose.ErrExpired):
		return "", fmt.Errorf("%w: it expired at %s", ErrTokenExpired, c.Expiry.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrBadToken, err)
	case c.Expiry == nil || c.ID == "":
		return "", fmt.Errorf("%w: missing exp or jti", ErrBadToken)
	case len(c.Audience) != 1 || c.Audience[0] != signAudience:
		return "", fmt.Errorf("%w: wrong audience", ErrBadToken)
	}
	id, err := NormalizeIdentity(c.Subject)
	if err != nil || id != c.Subject || len(c.SANs) != 1 || c.SANs[0] != id {
		return "", fmt.Errorf("%w: subject and SANs disagree", ErrBadToken)
	}
	return id, nil
}
