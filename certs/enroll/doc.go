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
// A Renewer keeps the certificate fresh: at two thirds of its lifetime it
// asks the gateway over mutual TLS, authenticated with the certificate being
// renewed, for a new one with the same key, and replaces the chain file
// atomically.
//
// State.ClientTLSConfig is the TLS configuration of a TSP-SSL connection: it
// presents the client certificate and verifies the gateway's against the
// pinned root with auth/certchain, which checks the intermediate of the
// client's own chain once instead of in every handshake.
package enroll
