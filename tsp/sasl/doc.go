// Package sasl implements the SASL mechanisms spoken inside the Tunnel Setup
// Protocol (RFC 5572) exactly as real clients (gogoc 1.2) compute them:
// ANONYMOUS, PLAIN (RFC 4616), DIGEST-MD5 (RFC 2831 style, md5-sess,
// qop=auth, nc fixed at 00000001, digest-uri taken from the client) and
// EXTERNAL (the identity comes from the TLS client certificate).
//
// The package is pure: it parses and builds SASL messages and does the
// digest arithmetic. Credentials are looked up through the small
// [Credentials] interface implemented by the caller (auth/ in this project);
// every secret comparison is constant-time.
package sasl
