package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/jose"
)

// Enroll spends token (single use) and signs csr for the token's identity,
// returning the leaf and the intermediate. The CSR must be self-signed with
// an acceptable key and name exactly the token's identity; these checks run
// before the token is spent.
func (ca *CA) Enroll(ctx context.Context, token string, csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
	id, err := ca.verifyToken(token)
	if err != nil {
		return nil, err
	}
	if err := checkRequest(csr, id); err != nil {
		return nil, err
	}
	chain, err := ca.sign(ctx, strings.TrimSpace(token), csr)
	if err != nil {
		return nil, err
	}
	if err := ca.record(chain, id, ""); err != nil {
		return nil, err
	}
	ca.opts.Logger.Info().Str("identity", id).Str("serial", chain[0].SerialNumber.String()).
		Time("not_after", chain[0].NotAfter).Msg("client certificate issued")
	return chain, nil
}

// checkRequest checks csr's signature and key, and that it names exactly id.
func checkRequest(csr *x509.CertificateRequest, id string) error {
	if err := checkCSR(csr); err != nil {
		return err
	}
	return csrMatches(csr, id)
}

// sign spends token, one of our provisioner's, and signs csr with it.
func (ca *CA) sign(ctx context.Context, token string, csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
	sctx := provisioner.NewContextWithMethod(ctx, provisioner.SignMethod)
	signOpts, err := ca.auth.Authorize(sctx, token)
	if err != nil {
		return nil, mapStepError(err, ErrBadToken)
	}
	chain, err := ca.auth.SignWithContext(sctx, csr, provisioner.SignOptions{}, signOpts...)
	if err != nil {
		return nil, mapStepError(err, ErrBadCSR)
	}
	if len(chain) == 0 {
		return nil, errors.New("embedded CA returned an empty chain")
	}
	return chain, nil
}

// Renew issues a new certificate with the same subject, SANs and lifetime as
// peer, for peer's key or, if csr is not nil, the CSR's (rekey). The caller
// guarantees that peer's key was proven over mutual TLS; Renew checks that
// peer is a valid, unrevoked client certificate of this CA, and the CSR's
// self-signature, which smallstep's renewal does not.
func (ca *CA) Renew(ctx context.Context, peer *x509.Certificate, csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
	// A renewal racing a revocation either completes first (and its new
	// certificate is revoked by RevokeIdentity) or sees the revocation.
	ca.revMu.RLock()
	defer ca.revMu.RUnlock()
	id, err := ca.checkPeer(peer)
	if err != nil {
		return nil, err
	}
	var pub any
	if csr != nil {
		if err := checkCSR(csr); err != nil {
			return nil, err
		}
		if csr.Subject.CommonName != "" && csr.Subject.CommonName != peer.Subject.CommonName {
			return nil, fmt.Errorf("%w: rekey CSR names %q, certificate is for %q", ErrIdentityMismatch, csr.Subject.CommonName, peer.Subject.CommonName)
		}
		pub = csr.PublicKey
	}
	chain, err := ca.auth.RenewContext(ctx, peer, pub)
	if err != nil {
		return nil, mapStepError(err, ErrUntrusted)
	}
	if err := ca.record(chain, id, peer.SerialNumber.String()); err != nil {
		return nil, err
	}
	ca.opts.Logger.Info().Str("identity", id).Str("serial", chain[0].SerialNumber.String()).
		Str("renewal_of", peer.SerialNumber.String()).Bool("rekey", csr != nil).Msg("client certificate renewed")
	return chain, nil
}

// checkPeer verifies a certificate presented for renewal and returns the
// identity it was issued for.
func (ca *CA) checkPeer(peer *x509.Certificate) (string, error) {
	if peer == nil {
		return "", ErrNoClientCert
	}
	now := ca.opts.Now()
	_, err := peer.Verify(x509.VerifyOptions{
		Roots: ca.roots, Intermediates: ca.inter,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime: peer.NotBefore.Add(peer.NotAfter.Sub(peer.NotBefore) / 2), // expiry checked below
	})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	serial := peer.SerialNumber.String()
	if now.After(peer.NotAfter) {
		return "", fmt.Errorf("%w: serial %s expired at %s; enroll again", ErrCertExpired, serial, peer.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
	}
	if ca.IsRevoked(serial) {
		return "", fmt.Errorf("%w: serial %s", ErrRevoked, serial)
	}
	rec, ok, err := ca.index.issued(serial)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: serial %s is not in the issuance index", ErrUntrusted, serial)
	}
	if rec.SSO {
		return "", fmt.Errorf("%w: serial %s", ErrSSORenew, serial)
	}
	return rec.Identity, nil
}

func (ca *CA) record(chain []*x509.Certificate, identity, renewalOf string) error {
	if len(chain) == 0 {
		return errors.New("embedded CA returned an empty chain")
	}
	leaf := chain[0]
	return ca.index.recordIssued(leaf.SerialNumber.String(), issuedRecord{Identity: identity, NotAfter: leaf.NotAfter, Renewal: renewalOf})
}

func checkCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return fmt.Errorf("%w: missing", ErrBadCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve must be P-256 or P-384", ErrBadCSR)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA key shorter than 2048 bits", ErrBadCSR)
		}
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, csr.PublicKey)
	}
	return nil
}

func csrMatches(csr *x509.CertificateRequest, id string) error {
	var emails, dns []string
	if isEmailIdentity(id) {
		emails = []string{id}
	} else {
		dns = []string{id}
	}
	ok := csr.Subject.CommonName == id &&
		slices.Equal(lower(csr.EmailAddresses), emails) && slices.Equal(lower(csr.DNSNames), dns) &&
		len(csr.IPAddresses) == 0 && len(csr.URIs) == 0
	if !ok {
		return fmt.Errorf("%w: token is for %q, CSR asks for CN %q, DNS %v, e-mail %v, IP %v, URI %v", ErrIdentityMismatch,
			id, csr.Subject.CommonName, csr.DNSNames, csr.EmailAddresses, csr.IPAddresses, csr.URIs)
	}
	return nil
}

func lower(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.ToLower(v)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// mapStepError turns a smallstep error into one of our sentinels; fallback
// is used for client-side (4xx) failures without a better match.
func mapStepError(err error, fallback error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "token already used"):
		return fmt.Errorf("%w", ErrTokenUsed)
	case errors.Is(err, jose.ErrExpired):
		return fmt.Errorf("%w: %s", ErrTokenExpired, msg)
	case strings.Contains(msg, "has been revoked"):
		return fmt.Errorf("%w: %s", ErrRevoked, msg)
	}
	if code := stepStatus(err); code >= 400 && code < 500 {
		return fmt.Errorf("%w: %s", fallback, msg)
	}
	return fmt.Errorf("embedded CA: %w", err)
}

func stepStatus(err error) int {
	code := http.StatusInternalServerError
	for e := err; e != nil; e = errors.Unwrap(e) {
		if s, ok := e.(interface{ StatusCode() int }); ok {
			code = s.StatusCode()
		}
	}
	return code
}
