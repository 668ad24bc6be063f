package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/dstmgw/dstm/internal/fsutil"
)

// DialFunc dials the gateway; tests pass an in-memory or loopback dialer.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options configure Enroll.
type Options struct {
	// Gateway is "host:port"; host is the name the gateway's certificate
	// must carry unless ServerName is set.
	Gateway    string
	ServerName string
	Token      string
	// Fingerprint pins the gateway's root (hex SHA-256 of its DER); empty
	// takes it from the token's "sha" claim. Trust on first use is never done.
	Fingerprint string
	StateDir    string // receives key, chain and root
	Dial        DialFunc
	Timeout     time.Duration // per HTTP exchange
}

// Errors returned by Enroll and the Renewer.
var (
	ErrNoFingerprint       = errors.New("no root fingerprint: pass one or use a token carrying the \"sha\" claim")
	ErrFingerprintMismatch = errors.New("root fingerprint mismatch")
)

// APIError is a non-2xx answer of the gateway.
type APIError struct {
	Status  int    // HTTP status code
	Message string // the gateway's error text
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("gateway refused (%d %s): %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Enroll generates a key, obtains a certificate for the token's identity and
// stores the credentials in opts.StateDir.
func Enroll(ctx context.Context, opts Options) (*State, error) {
	claims, fp, err := opts.check()
	if err != nil {
		return nil, err
	}
	root, err := fetchPinnedRoot(ctx, opts.endpoint(), fp)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := newCSR(key, claims.Identity, claims.SANs)
	if err != nil {
		return nil, err
	}
	ep := opts.endpoint()
	ep.root = root
	chain, err := postChain(ctx, ep, PathSign, SignRequest{Token: strings.TrimSpace(opts.Token), CSR: string(csr)})
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := verifyIssued(chain, root, &key.PublicKey); err != nil {
		return nil, err
	}
	if err := save(opts.StateDir, key, chain, root); err != nil {
		return nil, err
	}
	return Load(opts.StateDir)
}

func (o Options) check() (TokenClaims, string, error) {
	if o.Gateway == "" || o.StateDir == "" || o.Token == "" {
		return TokenClaims{}, "", errors.New("enroll: gateway, token and state directory are required")
	}
	if _, _, err := net.SplitHostPort(o.Gateway); err != nil {
		return TokenClaims{}, "", fmt.Errorf("enroll: gateway must be host:port: %w", err)
	}
	claims, err := ParseToken(o.Token)
	if err != nil {
		return TokenClaims{}, "", err
	}
	fp := NormalizeFingerprint(o.Fingerprint)
	switch {
	case fp == "" && claims.Fingerprint == "":
		return TokenClaims{}, "", ErrNoFingerprint
	case fp == "":
		fp = claims.Fingerprint
	case claims.Fingerprint != "" && claims.Fingerprint != fp:
		return TokenClaims{}, "", fmt.Errorf("%w: pinned %s but the token names %s", ErrFingerprintMismatch, fp, claims.Fingerprint)
	}
	return claims, fp, nil
}

func (o Options) endpoint() endpoint {
	return endpoint{gateway: o.Gateway, serverName: o.ServerName, dial: o.Dial, timeout: o.Timeout}
}

func newCSR(key *ecdsa.PrivateKey, identity string, sans []string) ([]byte, error) {
	tpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: identity}}
	for _, s := range sans {
		if addr, err := mail.ParseAddress(s); err == nil && addr.Address == s {
			tpl.EmailAddresses = append(tpl.EmailAddresses, s)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return fsutil.EncodePEM("CERTIFICATE REQUEST", der), nil
}

// endpoint is one gateway as seen by the HTTP helpers. With root nil the
// server is not authenticated (only used to fetch the root, which is then
// checked against the pin).
type endpoint struct {
	gateway    string
	serverName string
	dial       DialFunc
	timeout    time.Duration
	root       *x509.Certificate
	clientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

func (e endpoint) client() *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{ALPN}, ServerName: e.serverName}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(e.gateway)
	}
	if e.root == nil {
		// Only GET /1.0/roots travels on such a connection; its answer
		// is accepted only if it matches the pinned fingerprint.
		cfg.InsecureSkipVerify = true
	} else {
		pool := x509.NewCertPool()
		pool.AddCert(e.root)
		cfg.RootCAs = pool
	}
	cfg.GetClientCertificate = e.clientCert
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: false}
	if e.dial != nil {
		tr.DialContext = e.dial
	}
	t := e.timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	return &http.Client{Transport: tr, Timeout: t}
}

func (e endpoint) url(path string) string { return "https://" + e.gateway + path }

func fetchPinnedRoot(ctx context.Context, e endpoint, fp string) (*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url(PathRoots), nil)
	if err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	var rr RootsResponse
	if err := do(e.client(), req, &rr); err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	roots, err := parseChain(rr.Roots)
	if err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	var seen []string
	for _, r := range roots {
		if Fingerprint(r) != fp {
			seen = append(seen, Fingerprint(r))
			continue
		}
		if !r.IsCA || r.CheckSignatureFrom(r) != nil {
			return nil, fmt.Errorf("fetch root: pinned certificate %s is not a self-signed CA", fp)
		}
		return r, nil
	}
	return nil, fmt.Errorf("%w: gateway offers %s, expected %s", ErrFingerprintMismatch, strings.Join(seen, ", "), fp)
}

func postChain(ctx context.Context, e endpoint, path string, body any) ([]*x509.Certificate, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url(path), bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	var cr ChainResponse
	if err := do(e.client(), req, &cr); err != nil {
		return nil, err
	}
	return parseChain(cr.Chain)
}

func do(c *http.Client, req *http.Request, out any) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	if err != nil {
		return err
	}
	if len(body) > MaxBodyBytes {
		return fmt.Errorf("answer larger than %d bytes", MaxBodyBytes)
	}
	if resp.StatusCode/100 != 2 {
		var er ErrorResponse
		if json.Unmarshal(body, &er) != nil || er.Error == "" {
			er.Error = strings.TrimSpace(string(body))
		}
		return &APIError{Status: resp.StatusCode, Message: er.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
