// Package enroll is the client side of the gateway's enrollment API and the
// wire format both sides share. It has no smallstep dependency.
//
// Enroll turns a one-time token into a client certificate: it generates an
// ECDSA P-256 key locally (the key never leaves the machine), fetches the
// gateway's root over an unauthenticated TLS connection, accepts it only if
// its SHA-256 fingerprint matches the pin (given, or the token's "sha"
// claim), then sends token and CSR over a TLS connection verified against
// that root. Key, chain and root are stored 0600 in a 0700 state directory.
//
// A Renewer renews the certificate at two thirds of its lifetime over mutual
// TLS with the certificate itself, keeping the key. State.ClientTLSConfig is
// the TLS configuration of a TSP-SSL connection.
package enroll
