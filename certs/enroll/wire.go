package enroll

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"
)

// API paths served by the gateway's enrollment handler.
const (
	PathSign  = "/1.0/sign"
	PathRenew = "/1.0/renew"
	PathCRL   = "/1.0/crl"
	PathRoots = "/1.0/roots"
)

// ALPN is the protocol the enrollment API is reached with on the gateway's
// shared TLS port.
const ALPN = "http/1.1"

// MaxBodyBytes bounds every request and response body of the API.
const MaxBodyBytes = 64 << 10

// SignRequest is the body of POST /1.0/sign.
type SignRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"` // PEM "CERTIFICATE REQUEST"
}

// RenewRequest is the optional body of POST /1.0/renew. An empty CSR renews
// with the same key; a CSR rekeys (its signature proves possession).
type RenewRequest struct {
	CSR string `json:"csr,omitempty"`
}

// ChainResponse answers sign and renew: leaf first, then the intermediate,
// each PEM encoded.
type ChainResponse struct {
	Chain []string `json:"chain"`
}

// RootsResponse answers GET /1.0/roots with the PEM encoded roots.
type RootsResponse struct {
	Roots []string `json:"roots"`
}

// ErrorResponse is the body of every non-2xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Fingerprint returns the SHA-256 of the certificate's DER encoding in
// lowercase hex, the format `step certificate fingerprint` prints.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// NormalizeFingerprint lowercases a fingerprint and removes the colons and
// spaces some tools print between bytes.
func NormalizeFingerprint(fp string) string {
	r := strings.NewReplacer(":", "", " ", "")
	return strings.ToLower(r.Replace(strings.TrimSpace(fp)))
}

// Single sign-on paths.
const (
	// PathSSO (GET) tells a client where to sign in: SSOConfig.
	PathSSO = "/1.0/sso"
	// PathSSOSign (POST SSOSignRequest) trades a fresh ID token of the
	// company's provider and a CSR for a certificate; renewals of signed-in
	// certificates use it too, with an ID token from the refresh token.
	PathSSOSign = "/1.0/sso/sign"
)

// SSOConfig answers GET /1.0/sso.
type SSOConfig struct {
	Issuer        string   `json:"issuer"`
	ClientID      string   `json:"client_id"`
	Scopes        []string `json:"scopes"`
	IdentityClaim string   `json:"identity_claim"`
}

// SSOSignRequest is the body of POST /1.0/sso/sign.
type SSOSignRequest struct {
	IDToken string `json:"id_token"`
	CSR     string `json:"csr"` // PEM "CERTIFICATE REQUEST", naming the identity
}
