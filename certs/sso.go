package certs

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/sso"
)

// Single sign-on enrollment. The company's provider proves who the user is
// (an ID token, verified by package sso); the CA then issues through its own
// provisioner as for a one-time token, with the policy groups the directory
// gave in the certificate's organizational units. Signed-in certificates are
// renewed only by signing in again (the client uses its refresh token), so
// a user removed from the provider or from the allowed groups cannot renew.

// maxIDTokenAge bounds how long ago the ID token was issued.
const maxIDTokenAge = 10 * time.Minute

// Sign-ins are verified at most signInRate per second (burst signInBurst): a token naming a
// key the CA has not seen makes the verifier fetch the provider's keys, and nothing before the
// signature is secret.
const (
	signInRate  = 20
	signInBurst = 50
)

// SignIn verifies ID tokens (an *sso.Verifier).
type SignIn interface {
	Verify(ctx context.Context, rawIDToken, audience string) (sso.Claims, error)
	Config() sso.Config
}

// SetSignIn enables (or, with nil, disables) single sign-on enrollment.
func (ca *CA) SetSignIn(s SignIn) {
	if s == nil {
		ca.signIn.Store(nil)
		return
	}
	ca.signIn.Store(&s)
}

func (ca *CA) signInVerifier() (SignIn, error) {
	p := ca.signIn.Load()
	if p == nil {
		return nil, ErrSSODisabled
	}
	return *p, nil
}

// SSOConfig tells clients where to sign in.
func (ca *CA) SSOConfig() (enroll.SSOConfig, error) {
	s, err := ca.signInVerifier()
	if err != nil {
		return enroll.SSOConfig{}, err
	}
	c := s.Config()
	claim := c.IdentityClaim
	if claim == "" {
		claim = sso.DefaultIdentityClaim
	}
	scopes := []string{"openid", "email", "profile", "offline_access"}
	if c.GroupsClaim == "" || c.GroupsClaim == sso.DefaultGroupsClaim {
		scopes = append(scopes, "groups")
	}
	return enroll.SSOConfig{Issuer: c.Issuer, ClientID: c.ClientID, Scopes: scopes, IdentityClaim: claim}, nil
}

// EnrollSSO signs csr for the identity idToken proves. The token must be
// fresh (signed in at most maxIDTokenAge ago) and is spent: a second use
// fails with ErrTokenUsed on every gateway of a cluster.
func (ca *CA) EnrollSSO(ctx context.Context, idToken string, csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
	s, err := ca.signInVerifier()
	if err != nil {
		return nil, err
	}
	if !ca.signInRate.Allow() {
		return nil, fmt.Errorf("%w: too many sign-ins at once; try again in a moment", ErrSSOUnavailable)
	}
	claims, err := s.Verify(ctx, idToken, s.Config().ClientID)
	switch {
	case errors.Is(err, sso.ErrNotAllowed):
		return nil, fmt.Errorf("%w: %v", ErrSSODenied, err)
	case errors.Is(err, sso.ErrUnavailable):
		return nil, fmt.Errorf("%w: %v", ErrSSOUnavailable, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if age := ca.opts.Now().Sub(claims.IssuedAt); age > maxIDTokenAge {
		return nil, fmt.Errorf("%w: the sign-in is %s old, at most %s; sign in again", ErrTokenExpired, age.Round(time.Second), maxIDTokenAge)
	}
	id, err := NormalizeIdentity(claims.Identity)
	if err != nil {
		return nil, err
	}
	if err := checkRequest(csr, id); err != nil {
		return nil, err
	}
	prior, err := ca.Certificates(id)
	if err != nil {
		return nil, err
	}
	if at := lastRevocation(prior); !at.IsZero() && !claims.AuthTime.After(at) {
		return nil, fmt.Errorf("%w: a certificate of %s was revoked at %s, after this sign-in (%s); sign in again at the identity provider",
			ErrSSOReauth, id, at.UTC().Format(time.RFC3339), claims.AuthTime.UTC().Format(time.RFC3339))
	}
	ok, err := ca.auth.GetDatabase().UseToken("sso-"+claims.TokenHash, claims.TokenHash)
	if err != nil {
		return nil, fmt.Errorf("record ID token use: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: this sign-in was already used for a certificate", ErrTokenUsed)
	}
	tok, err := ca.mintToken(id, claims.PolicyGroups)
	if err != nil {
		return nil, err
	}
	chain, err := ca.sign(ctx, tok, csr)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	key := keyID(csr)
	renewalOf := ca.renewedBy(prior, key)
	rec := issuedRecord{Identity: id, NotAfter: leaf.NotAfter, SSO: true, Key: key, Renewal: renewalOf}
	if err := ca.index.recordIssued(leaf.SerialNumber.String(), rec); err != nil {
		return nil, err
	}
	ev := ca.opts.Logger.Info().Str("identity", id).Str("serial", leaf.SerialNumber.String()).
		Strs("groups", claims.PolicyGroups).Str("method", "sso").Time("not_after", leaf.NotAfter)
	if renewalOf != "" {
		ev = ev.Str("renewal_of", renewalOf)
	}
	ev.Msg("client certificate issued")
	return chain, nil
}

// lastRevocation is when the latest of certs was revoked; zero if none was. A sign-in
// older than it cannot get a certificate: after a lost device is revoked, the refresh token
// on it (whose ID tokens keep the original auth_time) gets nothing more, and the user's
// other devices sign in again once.
func lastRevocation(certs []Certificate) time.Time {
	var at time.Time
	for _, c := range certs {
		if c.Revoked && c.RevokedAt.After(at) {
			at = c.RevokedAt
		}
	}
	return at
}

// renewedBy returns the newest unrevoked signed-in certificate of the same key, which a
// sign-in for that key renews ("" if none): devices are renewal chains.
func (ca *CA) renewedBy(prior []Certificate, key string) string {
	for _, c := range prior { // newest first
		if c.Revoked {
			continue
		}
		if rec, ok, err := ca.index.issued(c.Serial); err == nil && ok && rec.SSO && rec.Key == key {
			return c.Serial
		}
	}
	return ""
}

// keyID is the hex SHA-256 of a public key's SubjectPublicKeyInfo.
func keyID(csr *x509.CertificateRequest) string {
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// mintToken is a one-time token of our provisioner for a verified sign-in,
// valid for a minute; it carries the policy groups for the template.
func (ca *CA) mintToken(id string, groups []string) (string, error) {
	jti, err := randomID()
	if err != nil {
		return "", err
	}
	now := ca.opts.Now()
	return ca.signToken(tokenClaims{
		Claims: jose.Claims{
			ID: jti, Issuer: provisionerName, Subject: id,
			Audience:  jose.Audience{signAudience},
			NotBefore: jose.NewNumericDate(now), IssuedAt: jose.NewNumericDate(now),
			Expiry: jose.NewNumericDate(now.Add(time.Minute)),
		},
		SANs:   []string{id},
		SHA:    ca.Fingerprint(),
		Groups: groups,
	})
}

// CertificateGroups returns the policy groups a client certificate carries
// (its organizational units, set from the directory at sign-in).
func CertificateGroups(c *x509.Certificate) []string {
	var out []string
	for _, g := range c.Subject.OrganizationalUnit {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}
