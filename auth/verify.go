package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dstmgw/dstm/auth/certchain"
)

// Revocations reports whether a certificate serial number (decimal) has been
// revoked. IsRevoked runs in every handshake: it must be fast and safe for
// concurrent use.
type Revocations interface {
	IsRevoked(serial string) bool
}

// Resolver maps an identity, with the groups its certificate carries, to its
// policy rule; *Policy and *PolicyHolder implement it.
type Resolver interface {
	ResolveWith(identity string, groups []string) (Rule, error)
}

// Peer is the certificate being verified and what the checks learned about
// it. Each Check reads what earlier checks filled in.
type Peer struct {
	Leaf          *x509.Certificate
	Intermediates []*x509.Certificate   // the other certificates presented
	Resumed       bool                  // a resumed TLS session: the chain verified when its ticket was issued
	Chains        [][]*x509.Certificate // set by CheckKnownChain
	Identity      Identity              // set by CheckIdentity
	Rule          Rule                  // set by CheckPolicy
}

// Check is one step of certificate verification. now is the verifier's
// clock reading, taken once per verification. A Check returns an error
// wrapping one of this package's sentinels.
type Check func(now time.Time, p *Peer) error

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	Roots []*x509.Certificate // required
	// Intermediates are the roots' intermediate CAs, for peers that do not
	// send their chain and for certchain's short path.
	Intermediates []*x509.Certificate
	Revocations   Revocations // required
	Policy        Resolver    // required; a *PolicyHolder follows reloads
	Now           func() time.Time
	Extra         []Check // run after the built-in checks
}

// Verifier verifies client certificates for crypto/tls and pion/dtls with
// the checks listed in the package documentation, then
// VerifierConfig.Extra. It is immutable and safe for concurrent use.
type Verifier struct {
	now    func() time.Time
	roots  *x509.CertPool
	checks []Check
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	switch {
	case len(cfg.Roots) == 0:
		return nil, errors.New("auth: verifier needs at least one root certificate")
	case cfg.Revocations == nil:
		return nil, errors.New("auth: verifier needs a revocation source")
	case cfg.Policy == nil:
		return nil, errors.New("auth: verifier needs a policy")
	}
	chain := certchain.New(certchain.Config{
		Roots:         cfg.Roots,
		Intermediates: cfg.Intermediates,
		Known:         cfg.Intermediates,
		Usage:         x509.ExtKeyUsageClientAuth,
	})
	roots := x509.NewCertPool()
	for _, c := range cfg.Roots {
		roots.AddCert(c)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	checks := []Check{
		CheckValidity(),
		CheckUsage(),
		CheckKnownChain(chain),
		CheckRevocation(cfg.Revocations),
		CheckIdentity(),
		CheckPolicy(cfg.Policy),
	}
	return &Verifier{now: now, roots: roots, checks: append(checks, cfg.Extra...)}, nil
}

// Verify parses the DER certificates the peer presented (leaf first) and
// runs every check.
func (v *Verifier) Verify(rawCerts [][]byte) (*Peer, error) {
	if len(rawCerts) == 0 {
		return nil, ErrNoCertificate
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrBadCertificate, i, err)
		}
		certs[i] = c
	}
	return v.VerifyCertificates(certs)
}

// VerifyCertificates is Verify for already parsed certificates, leaf first
// (e.g. tls.ConnectionState.PeerCertificates).
func (v *Verifier) VerifyCertificates(certs []*x509.Certificate) (*Peer, error) {
	return v.verify(certs, false)
}

func (v *Verifier) verify(certs []*x509.Certificate, resumed bool) (*Peer, error) {
	if len(certs) == 0 || certs[0] == nil {
		return nil, ErrNoCertificate
	}
	p := &Peer{Leaf: certs[0], Intermediates: certs[1:], Resumed: resumed}
	now := v.now()
	for _, check := range v.checks {
		if err := check(now, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// VerifyPeerCertificate has the signature of tls.Config.VerifyPeerCertificate
// and dtls.Config.VerifyPeerCertificate. It ignores the chains the stack
// verified, which may come from another pool or clock, and verifies rawCerts
// against this Verifier's roots and clock.
func (v *Verifier) VerifyPeerCertificate(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	_, err := v.Verify(rawCerts)
	return err
}

// VerifyConnection has the signature of tls.Config.VerifyConnection. Unlike
// VerifyPeerCertificate it also runs on resumed sessions, so a revoked or
// expired certificate cannot come back through a session ticket.
func (v *Verifier) VerifyConnection(cs tls.ConnectionState) error {
	_, err := v.VerifyState(cs)
	return err
}

// VerifyState verifies the peer certificates of a TLS connection. Those of a resumed session
// come from a ticket the server issued after verifying them: their signatures are not verified
// again (CheckKnownChain), every other check runs.
func (v *Verifier) VerifyState(cs tls.ConnectionState) (*Peer, error) {
	return v.verify(cs.PeerCertificates, cs.DidResume)
}

// IdentityFromState re-runs every check on a TLS connection's peer and
// returns its identity, or ErrNoCertificate when it sent none (a legacy
// client, which then has to use SASL PLAIN).
func (v *Verifier) IdentityFromState(cs tls.ConnectionState) (Identity, error) {
	p, err := v.VerifyState(cs)
	if err != nil {
		return Identity{}, err
	}
	return p.Identity, nil
}

// TLSConfig returns a clone of base (nil: empty) for TSP-SSL with a
// mandatory client certificate, verified by this Verifier in
// VerifyConnection after base's own. ClientCAs are the roots, so that
// clients know which certificate to send.
func (v *Verifier) TLSConfig(base *tls.Config) *tls.Config {
	return v.tlsConfig(base, tls.RequireAnyClientCert, false)
}

// OptionalTLSConfig is TLSConfig with the certificate requested, not
// required (TSP-SSL without ALPN, for legacy clients using SASL PLAIN); a
// certificate that is sent must pass every check.
func (v *Verifier) OptionalTLSConfig(base *tls.Config) *tls.Config {
	return v.tlsConfig(base, tls.RequestClientCert, true)
}

func (v *Verifier) tlsConfig(base *tls.Config, mode tls.ClientAuthType, optional bool) *tls.Config {
	c := &tls.Config{}
	if base != nil {
		c = base.Clone()
	}
	c.ClientAuth = mode
	c.ClientCAs = v.roots
	prev := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if optional && len(cs.PeerCertificates) == 0 {
			return nil
		}
		return v.VerifyConnection(cs)
	}
	return c
}

// CheckValidity refuses a leaf outside its validity period at now.
func CheckValidity() Check {
	return func(now time.Time, p *Peer) error {
		switch {
		case now.Before(p.Leaf.NotBefore):
			return fmt.Errorf("%w: serial %s valid from %s, now %s", ErrNotYetValid,
				p.Leaf.SerialNumber, p.Leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		case now.After(p.Leaf.NotAfter):
			return fmt.Errorf("%w: serial %s expired at %s, now %s", ErrExpired,
				p.Leaf.SerialNumber, p.Leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		return nil
	}
}

// CheckUsage requires the leaf to carry the TLS client authentication
// extended key usage explicitly (a certificate without any EKU is refused).
func CheckUsage() Check {
	return func(_ time.Time, p *Peer) error {
		if !slices.Contains(p.Leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			return fmt.Errorf("%w: serial %s lacks the clientAuth extended key usage", ErrWrongUsage, p.Leaf.SerialNumber)
		}
		return nil
	}
}

// CheckKnownChain verifies with v that the leaf chains to a trusted root at
// now, with the clientAuth usage allowed along the chain (for a resumed
// session: certchain's Recheck). It sets p.Chains.
func CheckKnownChain(v *certchain.Verifier) Check {
	return func(now time.Time, p *Peer) error {
		var chains [][]*x509.Certificate
		var err error
		if p.Resumed {
			chains, err = v.Recheck(p.Leaf, p.Intermediates, now)
		} else {
			chains, err = v.Verify(p.Leaf, p.Intermediates, now, "")
		}
		if err != nil {
			return chainError(p.Leaf, err)
		}
		p.Chains = chains
		return nil
	}
}

func chainError(leaf *x509.Certificate, err error) error {
	var (
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
	)
	sentinel := ErrBadCertificate
	switch {
	case errors.As(err, &unknown):
		sentinel = ErrUnknownCA
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		sentinel = ErrExpired // the leaf was checked already: a CA in the chain
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		sentinel = ErrWrongUsage
	}
	return fmt.Errorf("%w: serial %s issued by %q: %v", sentinel, leaf.SerialNumber, leaf.Issuer.CommonName, err)
}

// CheckRevocation refuses a leaf whose serial number is revoked.
func CheckRevocation(r Revocations) Check {
	return func(_ time.Time, p *Peer) error {
		serial := p.Leaf.SerialNumber.String()
		if r.IsRevoked(serial) {
			return fmt.Errorf("%w: serial %s (%q)", ErrRevoked, serial, p.Leaf.Subject.CommonName)
		}
		return nil
	}
}

// CheckIdentity derives the identity with IdentityFromCertificate and sets
// p.Identity.
func CheckIdentity() Check {
	return func(_ time.Time, p *Peer) error {
		id, err := IdentityFromCertificate(p.Leaf)
		if err != nil {
			return err
		}
		p.Identity = id
		return nil
	}
}

// CheckPolicy resolves p.Identity (set by CheckIdentity) and refuses it when
// the policy does. It sets p.Rule.
func CheckPolicy(r Resolver) Check {
	return func(_ time.Time, p *Peer) error {
		rule, err := r.ResolveWith(p.Identity.Name, p.Identity.Groups)
		if err != nil {
			return err
		}
		p.Rule = rule
		return nil
	}
}
