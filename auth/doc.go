// Package auth decides who a peer is and what it may do. It is pure policy
// over certificates and credentials: it does no network I/O, does not log,
// and does not import the gateway or smallstep.
//
// # Certificates
//
// A Verifier checks client certificates for crypto/tls and pion/dtls alike;
// both stacks call VerifyPeerCertificate with the same signature. The checks
// are a typed list of Check functions run in order:
//
//	CheckValidity    NotBefore/NotAfter against the injected clock  (ErrNotYetValid, ErrExpired)
//	CheckUsage       the leaf carries the clientAuth EKU            (ErrWrongUsage)
//	CheckKnownChain  chains to our roots at the same instant        (ErrUnknownCA, ErrExpired, ErrWrongUsage)
//	CheckRevocation  leaf serial not revoked                        (ErrRevoked)
//	CheckIdentity    CN equals the single SAN, ValidIdentity        (ErrBadIdentity)
//	CheckPolicy      the identity is allowed by policy              (ErrNotAllowed)
//
// CheckKnownChain verifies through a certchain.Verifier: the configured
// intermediates (the embedded CA's) are verified against the roots once, so a
// client presenting a byte-identical copy costs one signature verification
// (its leaf's) instead of two; any other chain, and any refusal, is the full
// x509 verification's. The Verifier always verifies from the raw certificates
// itself, so the TLS or DTLS stack can be configured with
// RequireAnyClientCert; chains the stack verified are not relied on. Serial numbers are handled in decimal
// (big.Int.String), the form smallstep stores and revokes.
//
// For crypto/tls use Verifier.TLSConfig (certificate required) or
// Verifier.OptionalTLSConfig (certificate requested; without one only SASL
// PLAIN can succeed); both install VerifyConnection, which also runs on
// resumed sessions. After the handshake, IdentityFromState or VerifyState
// return the identity (and rule). For pion/dtls use
// dtls.WithClientAuth(dtls.RequireAnyClientCert) and
// dtls.WithVerifyPeerCertificate(v.VerifyPeerCertificate); if DTLS session
// resumption is enabled, use dtls.WithVerifyConnection with the one-line
// adapter func(s *dtls.State) error { _, err := v.Verify(s.PeerCertificates);
// return err } instead, since it also runs on resumed sessions. A refusal,
// including one by policy, fails the handshake with a bad_certificate alert.
//
// Every error wraps one sentinel (ErrNoCertificate, ErrBadCertificate,
// ErrUnknownCA, ErrExpired, ErrNotYetValid, ErrWrongUsage, ErrRevoked,
// ErrBadIdentity, ErrNotAllowed); Reason maps an error to a metric label.
//
// # Identities
//
// An Identity is a name and the SASL mechanism that proved it: EXTERNAL
// (certificate; IdentityFromCertificate), PLAIN and DIGEST-MD5 (user name;
// SASLIdentity) or ANONYMOUS (the client's IPv6 address; AnonymousIdentity).
// ValidIdentity is the one syntax check: 1–255 bytes of printable UTF-8
// without spaces or control characters.
//
// # Policy
//
// PolicyConfig is embedded in the gateway's YAML configuration (snake_case
// keys; addresses and prefixes are parsed as text). NewPolicy validates it
// completely, naming each bad field, and returns an immutable Policy.
// Precedence per field: identity rule, then the identity's groups in the
// order listed (first group setting the field wins), then the default rule.
// Unknown identities get the default rule or are refused (unknown: refuse).
// PolicyHolder swaps policies atomically on reload and is itself a Resolver.
//
// # Passwords
//
// DigestStore reads an htdigest file (user:realm:md5hex(user:realm:password))
// for SASL PLAIN (VerifyPlain) and DIGEST-MD5 (DigestHA1). The file must not
// be accessible to other users. SetDigestUser and AppendDigestLine write
// entries for `dstm-gateway passwd`.
package auth
