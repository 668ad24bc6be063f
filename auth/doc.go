// Package auth decides who a peer is and what it may do. It is pure policy
// over certificates and credentials: no network I/O, no logging, and no
// import of the gateway or smallstep.
//
// # Certificates
//
// A Verifier checks client certificates for crypto/tls and pion/dtls alike,
// with Check functions run in order:
//
//	CheckValidity    NotBefore/NotAfter against the injected clock  (ErrNotYetValid, ErrExpired)
//	CheckUsage       the leaf carries the clientAuth EKU            (ErrWrongUsage)
//	CheckKnownChain  chains to our roots at the same instant        (ErrUnknownCA, ErrExpired, ErrWrongUsage)
//	CheckRevocation  leaf serial not revoked                        (ErrRevoked)
//	CheckIdentity    CN equals the single SAN, ValidIdentity        (ErrBadIdentity)
//	CheckPolicy      the identity is allowed by policy              (ErrNotAllowed)
//
// The Verifier always verifies the raw certificates itself, so the TLS or
// DTLS stack is configured with RequireAnyClientCert and its own chains are
// not relied on. Serial numbers are decimal (big.Int.String), the form
// smallstep stores and revokes.
//
// For crypto/tls use Verifier.TLSConfig or Verifier.OptionalTLSConfig; both
// install VerifyConnection, which also runs on resumed sessions. For
// pion/dtls use dtls.RequireAnyClientCert with VerifyPeerCertificate, or,
// with session resumption, a VerifyConnection adapter calling Verify. A
// refusal fails the handshake with a bad_certificate alert.
//
// Every error wraps one sentinel (ErrNoCertificate, ErrUnknownCA, …);
// Reason maps it to a metric label.
//
// # Identities and policy
//
// An Identity is a name and the SASL mechanism that proved it: EXTERNAL
// (certificate), PLAIN and DIGEST-MD5 (user name) or ANONYMOUS (the client's
// IPv6 address). NewPolicy validates a PolicyConfig completely and returns an
// immutable Policy; PolicyHolder swaps policies atomically on reload.
//
// # Passwords
//
// DigestStore reads an htdigest file for SASL PLAIN and DIGEST-MD5; the file
// must not be accessible to other users.
package auth
