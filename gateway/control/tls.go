package control

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/tunnel/tlsrec"
)

// ALPN protocol names on the TSP port (DESIGN §3).
const (
	alpnTSP  = "tsp/2"
	alpnHTTP = "http/1.1"
)

// tls12Suites are the TLS 1.2 suites offered: ECDHE with AEAD only (no CBC: LUCKY13 and its
// kin). The certificates are ECDSA; the RSA suites serve nothing but cost nothing either.
func tls12Suites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// NewTLSConfig is the TLS side of the TSP port: TSP-SSL (ALPN tsp/2-rec1, whose records are
// taken over after the handshake (tlsrec), or tsp/2, client certificate required; no ALPN,
// certificate optional) and the enrollment API (ALPN http/1.1). Session
// tickets are on, with keys the caller sets (SetSessionTicketKeys): a resumed connection skips
// the signatures of a full handshake, and VerifyConnection still checks the certificate's
// validity, revocation and policy. Only TLS 1.3 resumes: its resumption keeps the (EC)DHE
// exchange, TLS 1.2's would make the ticket key a key to recorded traffic (docs/security.md).
func NewTLSConfig(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), clientCAs *x509.CertPool, verifier *auth.Verifier) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   tls12Suites(),
		GetCertificate: getCertificate,
		NextProtos:     []string{tlsrec.ALPN, alpnTSP, alpnHTTP},
		ClientAuth:     tls.RequestClientCert,
		ClientCAs:      clientCAs,
		VerifyConnection: func(cs tls.ConnectionState) error {
			switch {
			case cs.NegotiatedProtocol == alpnHTTP:
				return nil // the enrollment API checks certificates per request
			case len(cs.PeerCertificates) == 0 && (cs.NegotiatedProtocol == alpnTSP || cs.NegotiatedProtocol == tlsrec.ALPN):
				return auth.ErrNoCertificate
			case len(cs.PeerCertificates) == 0:
				return nil // a TLS-wrapped legacy client: only SASL PLAIN can succeed
			}
			_, err := verifier.VerifyState(cs)
			return err
		},
	}
	cfg.UnwrapSession = func(ticket []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		if cs.Version < tls.VersionTLS13 {
			return nil, nil // a full handshake
		}
		return cfg.DecryptTicket(ticket, cs)
	}
	return cfg
}
