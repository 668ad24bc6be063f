// Package certs is the gateway's embedded certificate authority. It runs
// smallstep's authority in-process (authority.NewEmbedded) behind a small
// API of standard library types; no smallstep type leaves this package.
//
// A CA lives in a state directory (0700):
//
//	root_ca.crt, root_ca.key                  ECDSA P-256 root (key 0600)
//	intermediate_ca.crt, intermediate_ca.key  ECDSA P-256 issuing CA (key 0600)
//	provisioner.key                           JWK provisioner key signing tokens (0600)
//	server.crt, server.key                    the gateway's TLS certificate (key 0600)
//	ca.db                                     smallstep's bbolt DB: used tokens, issued and revoked certificates
//	index.db                                  our bbolt index: identity -> serials, revocations, CRL number
//
// With Options.Shared (cluster mode) ca.db and index.db are not used: their
// content lives in etcd, shared by the gateways that open the same keys, and
// Run follows the revocations the other gateways make (shared.go).
//
//	ca.json                                   format version and provisioner name (written last by Init)
//
// Token issues single-use enrollment tokens; Enroll turns token + CSR into a
// short-lived client certificate; Renew renews a certificate its holder
// proved possession of over mutual TLS; Revoke and RevokeIdentity revoke,
// publish an event, and refresh the CRL; IsRevoked is a lock-free lookup for
// TLS verification callbacks. Handler serves the enrollment HTTP API and
// GetCertificate serves the rotating server certificate.
package certs
