// Package certchain verifies certificate chains to fixed roots with one
// signature verification per handshake, instead of one per link, when the
// peer's chain goes through an intermediate CA it already knows.
//
// The gateway's certificates come from its embedded CA: root → intermediate
// → leaf. The intermediate's signature by the root gives the same answer in
// every handshake, so a Verifier checks each known intermediate against the
// roots once, in New. A peer that presents only byte-identical copies of
// known intermediates gets x509.Certificate.Verify of its leaf with those
// intermediates as the only trust anchors (the leaf's signature, validity,
// extensions, host name and extended key usage, and the intermediate's
// validity and CA flags), plus a check of the root's validity at the same
// instant.
//
// Only intermediates whose chain cannot change the outcome are known: no
// name or policy constraints, and a root that allows one intermediate below
// it. Any other chain, a leaf with policy constraints, and any failure of the
// short path get the full verification against the roots, which alone
// decides a refusal: the short path accepts only what the full verification
// accepts.
package certchain

import (
	"bytes"
	"crypto/x509"
	"slices"
	"time"
)

// Config configures a Verifier.
type Config struct {
	// Roots are the trust anchors. Required.
	Roots []*x509.Certificate
	// Intermediates help the full verification, for peers that do not send
	// their chain. Optional.
	Intermediates []*x509.Certificate
	// Known are the candidates for the short path; those not eligible are
	// ignored.
	Known []*x509.Certificate
	// Usage is the extended key usage the leaf must be valid for.
	Usage x509.ExtKeyUsage
}

// anchor is a known intermediate and the root it was verified against.
type anchor struct {
	inter, root *x509.Certificate
}

// Verifier verifies leaf certificates to fixed roots. It is immutable and
// safe for concurrent use.
type Verifier struct {
	usages  []x509.ExtKeyUsage
	roots   *x509.CertPool
	inter   *x509.CertPool
	anchors *x509.CertPool    // the known intermediates, as the short path's trust anchors
	known   map[string]anchor // raw DER of a known intermediate → it and its root
}

// New returns a Verifier for cfg. It verifies each of cfg.Known against
// cfg.Roots (one signature each) and keeps the eligible ones.
func New(cfg Config) *Verifier {
	v := &Verifier{
		usages:  []x509.ExtKeyUsage{cfg.Usage},
		roots:   x509.NewCertPool(),
		inter:   x509.NewCertPool(),
		anchors: x509.NewCertPool(),
		known:   make(map[string]anchor),
	}
	for _, c := range cfg.Roots {
		v.roots.AddCert(c)
	}
	for _, c := range cfg.Intermediates {
		v.inter.AddCert(c)
	}
	for _, c := range cfg.Known {
		a, ok := v.eligible(c)
		if !ok {
			continue
		}
		if _, dup := v.known[string(c.Raw)]; dup {
			continue
		}
		v.known[string(c.Raw)] = a
		v.anchors.AddCert(c)
	}
	return v
}

// Roots returns the pool of trust anchors. It must not be modified.
func (v *Verifier) Roots() *x509.CertPool { return v.roots }

// Known reports how many intermediates are eligible for the short path.
func (v *Verifier) Known() int { return len(v.known) }

// eligible verifies inter against the roots, at an instant when it is valid,
// and reports whether the short path may use it.
func (v *Verifier) eligible(inter *x509.Certificate) (anchor, bool) {
	if !inter.BasicConstraintsValid || !inter.IsCA || !simpleCA(inter) {
		return anchor{}, false
	}
	chains, err := inter.Verify(x509.VerifyOptions{
		Roots:       v.roots,
		CurrentTime: inter.NotBefore,
		KeyUsages:   v.usages,
	})
	if err != nil {
		return anchor{}, false
	}
	for _, ch := range chains {
		if len(ch) != 2 {
			continue // through another intermediate, or inter is itself a root
		}
		root := ch[1]
		// With the leaf below inter, the root has one intermediate below it.
		pathOK := !root.BasicConstraintsValid || root.MaxPathLen < 0 || root.MaxPathLen >= 1
		if pathOK && simpleCA(root) {
			return anchor{inter: inter, root: root}, true
		}
	}
	return anchor{}, false
}

// simpleCA reports whether c has no name or policy constraints and no policy
// mappings, the chain checks in which the full and the short path differ.
func simpleCA(c *x509.Certificate) bool {
	return len(c.PermittedDNSDomains) == 0 && len(c.ExcludedDNSDomains) == 0 &&
		len(c.PermittedIPRanges) == 0 && len(c.ExcludedIPRanges) == 0 &&
		len(c.PermittedEmailAddresses) == 0 && len(c.ExcludedEmailAddresses) == 0 &&
		len(c.PermittedURIDomains) == 0 && len(c.ExcludedURIDomains) == 0 &&
		!c.PermittedDNSDomainsCritical && noPolicyConstraints(c)
}

func noPolicyConstraints(c *x509.Certificate) bool {
	return len(c.PolicyMappings) == 0 &&
		c.RequireExplicitPolicy == 0 && !c.RequireExplicitPolicyZero &&
		c.InhibitPolicyMapping == 0 && !c.InhibitPolicyMappingZero &&
		c.InhibitAnyPolicy == 0 && !c.InhibitAnyPolicyZero
}

// Verify verifies leaf, with the intermediates the peer presented, at now,
// for the Verifier's usage and, unless dnsName is empty, for the host name
// or IP address dnsName. It returns the verified chains, each ending at a
// root, or the error of x509.Certificate.Verify.
func (v *Verifier) Verify(leaf *x509.Certificate, presented []*x509.Certificate, now time.Time, dnsName string) ([][]*x509.Certificate, error) {
	if chains, ok := v.short(leaf, presented, now, dnsName); ok {
		return chains, nil
	}
	return v.full(leaf, presented, now, dnsName)
}

// short is the short path: ok is false when it does not apply or does not
// accept the chain.
func (v *Verifier) short(leaf *x509.Certificate, presented []*x509.Certificate, now time.Time, dnsName string) ([][]*x509.Certificate, bool) {
	if len(presented) == 0 || len(v.known) == 0 || !noPolicyConstraints(leaf) {
		return nil, false
	}
	for _, c := range presented {
		if _, ok := v.known[string(c.Raw)]; !ok {
			return nil, false
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:       v.anchors,
		CurrentTime: now,
		DNSName:     dnsName,
		KeyUsages:   v.usages,
	})
	if err != nil {
		return nil, false
	}
	out := chains[:0]
	for _, ch := range chains {
		if len(ch) != 2 { // the leaf is itself a known intermediate
			continue
		}
		a, ok := v.known[string(ch[1].Raw)]
		if !ok || now.Before(a.root.NotBefore) || now.After(a.root.NotAfter) {
			continue // the root is not valid at now
		}
		out = append(out, []*x509.Certificate{ch[0], ch[1], a.root})
	}
	return out, len(out) > 0
}

// full is x509.Certificate.Verify against the roots, with the presented and
// configured intermediates.
func (v *Verifier) full(leaf *x509.Certificate, presented []*x509.Certificate, now time.Time, dnsName string) ([][]*x509.Certificate, error) {
	pool := v.inter
	if len(presented) > 0 {
		pool = v.inter.Clone()
		for _, c := range presented {
			pool.AddCert(c)
		}
	}
	return leaf.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: pool,
		CurrentTime:   now,
		DNSName:       dnsName,
		KeyUsages:     v.usages,
	})
}

// Recheck is Verify for a chain this Verifier accepted before, which the caller knows has not
// changed (a resumed TLS session: the ticket that carries the chain is authenticated with a
// key only the server has, and was issued after a full verification). Signatures do not
// change, so they are not verified again; what depends on the time is: the validity of the
// leaf, of its known intermediate and of that intermediate's root, and the leaf's usage. A
// chain not through a known intermediate gets Verify.
func (v *Verifier) Recheck(leaf *x509.Certificate, presented []*x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	if len(presented) == 0 || !noPolicyConstraints(leaf) || !v.usable(leaf) || !validAt(leaf, now) {
		return v.Verify(leaf, presented, now, "")
	}
	for _, c := range presented {
		if _, ok := v.known[string(c.Raw)]; !ok {
			return v.Verify(leaf, presented, now, "")
		}
	}
	for _, c := range presented {
		a := v.known[string(c.Raw)]
		if bytes.Equal(leaf.RawIssuer, a.inter.RawSubject) && bytes.Equal(leaf.AuthorityKeyId, a.inter.SubjectKeyId) &&
			validAt(a.inter, now) && validAt(a.root, now) {
			return [][]*x509.Certificate{{leaf, a.inter, a.root}}, nil
		}
	}
	return v.Verify(leaf, presented, now, "")
}

func validAt(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && !now.After(c.NotAfter)
}

// usable reports whether leaf's extended key usage allows one of v.usages.
func (v *Verifier) usable(leaf *x509.Certificate) bool {
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageAny || slices.Contains(v.usages, u) || slices.Contains(v.usages, x509.ExtKeyUsageAny) {
			return true
		}
	}
	return false
}
