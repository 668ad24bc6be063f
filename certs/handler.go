package certs

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/internal/fsutil"
)

// Handler returns the enrollment API:
//
//	POST /1.0/sign   {"token","csr"} -> {"chain":[PEM...]}
//	POST /1.0/renew  mutual TLS with the certificate to renew; optional {"csr"} rekeys
//	GET  /1.0/crl    DER CRL (application/pkix-crl)
//	GET  /1.0/roots  {"roots":[PEM]}
//	GET  /1.0/sso       where to sign in (404 without single sign-on)
//	POST /1.0/sso/sign  {"id_token","csr"} -> {"chain":[PEM...]}
//
// Errors are {"error": "..."} with 400 (bad request or CSR), 401 (bad,
// used or expired token; missing or foreign client certificate), 403
// (revoked or expired certificate, identity mismatch, sign-in refused by
// policy, mutual-TLS renewal of a signed-in certificate), 404 (no single
// sign-on), 503 (identity provider unreachable) or 500 (internal;
// details stay in the gateway's log).
func (ca *CA) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+enroll.PathSign, ca.handleSign)
	mux.HandleFunc("POST "+enroll.PathRenew, ca.handleRenew)
	mux.HandleFunc("GET "+enroll.PathCRL, ca.handleCRL)
	mux.HandleFunc("GET "+enroll.PathRoots, ca.handleRoots)
	mux.HandleFunc("GET "+enroll.PathSSO, ca.handleSSO)
	mux.HandleFunc("POST "+enroll.PathSSOSign, ca.handleSSOSign)
	return mux
}

func (ca *CA) handleSSO(w http.ResponseWriter, r *http.Request) {
	c, err := ca.SSOConfig()
	if err != nil {
		ca.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (ca *CA) handleSSOSign(w http.ResponseWriter, r *http.Request) {
	var req enroll.SSOSignRequest
	ca.serveSign(w, r, &req, &req.CSR, func(csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
		return ca.EnrollSSO(r.Context(), req.IDToken, csr)
	})
}

func (ca *CA) handleSign(w http.ResponseWriter, r *http.Request) {
	var req enroll.SignRequest
	ca.serveSign(w, r, &req, &req.CSR, func(csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
		return ca.Enroll(r.Context(), req.Token, csr)
	})
}

// serveSign decodes the body into req, parses the PEM CSR it leaves in
// *pemCSR and answers with the chain issue returns for it.
func (ca *CA) serveSign(w http.ResponseWriter, r *http.Request, req any, pemCSR *string, issue func(*x509.CertificateRequest) ([]*x509.Certificate, error)) {
	if err := decodeBody(r, req, false); err != nil {
		ca.writeError(w, r, err)
		return
	}
	csr, err := parseCSR(*pemCSR)
	if err != nil {
		ca.writeError(w, r, err)
		return
	}
	chain, err := issue(csr)
	if err != nil {
		ca.writeError(w, r, err)
		return
	}
	writeChain(w, chain)
}

func (ca *CA) handleRenew(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		ca.writeError(w, r, fmt.Errorf("%w: renewal requires mutual TLS with the certificate to renew", ErrNoClientCert))
		return
	}
	var req enroll.RenewRequest
	if err := decodeBody(r, &req, true); err != nil {
		ca.writeError(w, r, err)
		return
	}
	var csr *x509.CertificateRequest
	if req.CSR != "" {
		var err error
		if csr, err = parseCSR(req.CSR); err != nil {
			ca.writeError(w, r, err)
			return
		}
	}
	// The TLS stack proved possession of PeerCertificates[0]'s key; Renew
	// verifies the chain, expiry and revocation itself.
	chain, err := ca.Renew(r.Context(), r.TLS.PeerCertificates[0], csr)
	if err != nil {
		ca.writeError(w, r, err)
		return
	}
	writeChain(w, chain)
}

func (ca *CA) handleCRL(w http.ResponseWriter, r *http.Request) {
	der, err := ca.CRL()
	if err != nil {
		ca.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
}

func (ca *CA) handleRoots(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, enroll.RootsResponse{Roots: []string{string(fsutil.EncodePEM("CERTIFICATE", ca.pki.root.Raw))}})
}

var errBadRequest = errors.New("bad request")

func decodeBody(r *http.Request, v any, emptyOK bool) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, enroll.MaxBodyBytes+1))
	if err != nil {
		return fmt.Errorf("%w: read body: %v", errBadRequest, err)
	}
	if len(body) > enroll.MaxBodyBytes {
		return fmt.Errorf("%w: body larger than %d bytes", errBadRequest, enroll.MaxBodyBytes)
	}
	if emptyOK && len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: JSON body: %v", errBadRequest, err)
	}
	return nil
}

func parseCSR(p string) (*x509.CertificateRequest, error) {
	ders, err := fsutil.DecodePEM([]byte(p), "CERTIFICATE REQUEST")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	csr, err := x509.ParseCertificateRequest(ders[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	return csr, nil
}

func writeChain(w http.ResponseWriter, chain []*x509.Certificate) {
	out := enroll.ChainResponse{Chain: make([]string, len(chain))}
	for i, c := range chain {
		out.Chain[i] = string(fsutil.EncodePEM("CERTIFICATE", c.Raw))
	}
	writeJSON(w, http.StatusOK, out)
}

func (ca *CA) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, public := HTTPStatus(err)
	msg := err.Error()
	if errors.Is(err, errBadRequest) {
		status, public = http.StatusBadRequest, true
	}
	if !public {
		msg = "internal error; see the gateway log"
		ca.opts.Logger.Warn().Err(err).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).Msg("enrollment API request failed")
	} else {
		ca.opts.Logger.Info().Str("reason", msg).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).Msg("enrollment API request refused")
	}
	writeJSON(w, status, enroll.ErrorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
