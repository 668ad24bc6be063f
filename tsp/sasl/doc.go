// Package sasl implements the SASL mechanisms spoken inside the Tunnel Setup
// Protocol (RFC 5572) exactly as gogoc 1.2 computes them: ANONYMOUS, PLAIN
// (RFC 4616), DIGEST-MD5 (RFC 2831 style, md5-sess, qop=auth, nc fixed at
// 00000001, digest-uri taken from the client) and EXTERNAL (the identity
// comes from the TLS client certificate). It does no I/O: the caller
// supplies [Credentials] (auth/ in this project), and every secret
// comparison is constant-time.
package sasl
