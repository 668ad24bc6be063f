package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dstmgw/dstm/internal/fsutil"
)

// SSOFile holds a signed-in client's refresh token and where it signed in
// (0600, next to the key).
const SSOFile = "sso.json"

// ErrSignInAgain means the provider no longer renews the sign-in (user
// removed, refresh token revoked or expired): run enroll --sso again.
var ErrSignInAgain = errors.New("the sign-in is no longer valid: sign in again with dstm-client enroll --sso")

// Device flow outcomes the user can act on.
var (
	ErrDeviceCodeExpired = errors.New("the code expired before the sign-in was completed: run dstm-client enroll --sso again")
	ErrSignInDenied      = errors.New("the sign-in was denied at the identity provider")
)

// SSOOptions configure EnrollSSO.
type SSOOptions struct {
	Gateway     string // "host:port"
	ServerName  string
	Fingerprint string // the gateway's root; required
	StateDir    string
	Dial        DialFunc
	Timeout     time.Duration
	// Browser selects the code flow with PKCE on a loopback redirect;
	// otherwise the device authorization grant (RFC 8628), which works on a
	// machine without a browser.
	Browser bool
	// OpenURL opens a URL in the user's browser (Browser mode); nil or a
	// failure leaves the URL printed on Prompt for the user to open.
	OpenURL func(string) error
	// Prompt receives the instructions for the user.
	Prompt io.Writer
	// ProviderCAFile adds roots for the provider's TLS certificate.
	ProviderCAFile string
	// ProviderClient overrides the HTTP client that reaches the provider.
	ProviderClient *http.Client
}

// ssoState is SSOFile.
type ssoState struct {
	Issuer        string   `json:"issuer"`
	ClientID      string   `json:"client_id"`
	Scopes        []string `json:"scopes"`
	IdentityClaim string   `json:"identity_claim"`
	RefreshToken  string   `json:"refresh_token"`
	CAFile        string   `json:"provider_ca_file,omitempty"`
}

// EnrollSSO signs in at the company's provider, as the gateway names it, and
// trades the ID token for a certificate. The key is generated here and
// never leaves the machine.
func EnrollSSO(ctx context.Context, o SSOOptions) (*State, error) {
	fp := NormalizeFingerprint(o.Fingerprint)
	switch {
	case o.Gateway == "" || o.StateDir == "":
		return nil, errors.New("enroll: gateway and state directory are required")
	case fp == "":
		return nil, fmt.Errorf("%w (--fingerprint; the console's client configuration has it)", ErrNoFingerprint)
	}
	if _, _, err := net.SplitHostPort(o.Gateway); err != nil {
		return nil, fmt.Errorf("enroll: gateway must be host:port: %w", err)
	}
	ep := endpoint{gateway: o.Gateway, serverName: o.ServerName, dial: o.Dial, timeout: o.Timeout}
	root, err := fetchPinnedRoot(ctx, ep, fp)
	if err != nil {
		return nil, err
	}
	ep.root = root
	var sc SSOConfig
	if err := getJSON(ctx, ep, PathSSO, &sc); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	hc, err := providerClient(o.ProviderClient, o.ProviderCAFile)
	if err != nil {
		return nil, err
	}
	st := ssoState{Issuer: sc.Issuer, ClientID: sc.ClientID, Scopes: sc.Scopes, IdentityClaim: sc.IdentityClaim, CAFile: o.ProviderCAFile}
	cfg, err := st.oauth(ctx, hc)
	if err != nil {
		return nil, err
	}
	prompt := o.Prompt
	if prompt == nil {
		prompt = io.Discard
	}
	octx := context.WithValue(ctx, oauth2.HTTPClient, hc)
	var tok *oauth2.Token
	if o.Browser {
		tok, err = browserFlow(octx, cfg, prompt, o.OpenURL)
	} else {
		tok, err = deviceFlow(octx, cfg, prompt)
	}
	if err != nil {
		return nil, fmt.Errorf("sign in at %s: %w", sc.Issuer, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	chain, err := st.sign(ctx, ep, tok, key)
	if err != nil {
		return nil, err
	}
	if err := save(o.StateDir, key, chain, root); err != nil {
		return nil, err
	}
	if err := st.save(o.StateDir, tok); err != nil {
		return nil, err
	}
	return Load(o.StateDir)
}

// sign posts the token's ID token with a CSR for key.
func (st ssoState) sign(ctx context.Context, ep endpoint, tok *oauth2.Token, key *ecdsa.PrivateKey) ([]*x509.Certificate, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("the provider returned no ID token")
	}
	id, err := unverifiedClaim(raw, st.IdentityClaim)
	if err != nil {
		return nil, err
	}
	id = strings.ToLower(id) // the gateway's spelling of identities
	csr, err := newCSR(key, id, []string{id})
	if err != nil {
		return nil, err
	}
	chain, err := postChain(ctx, ep, PathSSOSign, SSOSignRequest{IDToken: raw, CSR: string(csr)})
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := verifyIssued(chain, ep.root, &key.PublicKey); err != nil {
		return nil, err
	}
	return chain, nil
}

func (st ssoState) oauth(ctx context.Context, hc *http.Client) (*oauth2.Config, error) {
	prov, err := oidc.NewProvider(oidc.ClientContext(ctx, hc), st.Issuer)
	if err != nil {
		return nil, fmt.Errorf("identity provider %s: %w", st.Issuer, err)
	}
	return &oauth2.Config{ClientID: st.ClientID, Endpoint: prov.Endpoint(), Scopes: st.Scopes}, nil
}

func (st ssoState) save(dir string, tok *oauth2.Token) error {
	if tok.RefreshToken != "" {
		st.RefreshToken = tok.RefreshToken
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, SSOFile), b, filesPerm)
}

func loadSSO(dir string) (ssoState, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, SSOFile))
	if errors.Is(err, os.ErrNotExist) {
		return ssoState{}, false, nil
	}
	if err != nil {
		return ssoState{}, false, err
	}
	var st ssoState
	if err := json.Unmarshal(b, &st); err != nil {
		return ssoState{}, false, fmt.Errorf("%s: %w", SSOFile, err)
	}
	return st, true, nil
}

// renewSSO renews a signed-in certificate: a fresh ID token from the refresh
// token, then the same key signed again on gw.
func (r *Renewer) renewSSO(ctx context.Context, st ssoState, ep endpoint, key *ecdsa.PrivateKey) ([]*x509.Certificate, error) {
	if st.RefreshToken == "" {
		return nil, ErrSignInAgain
	}
	hc, err := providerClient(nil, st.CAFile)
	if err != nil {
		return nil, err
	}
	cfg, err := st.oauth(ctx, hc)
	if err != nil {
		return nil, err
	}
	octx := context.WithValue(ctx, oauth2.HTTPClient, hc)
	tok, err := cfg.TokenSource(octx, &oauth2.Token{RefreshToken: st.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && (re.ErrorCode == "invalid_grant" || re.Response != nil && re.Response.StatusCode/100 == 4) {
			return nil, fmt.Errorf("%w (%s)", ErrSignInAgain, re.ErrorCode)
		}
		return nil, fmt.Errorf("refresh the sign-in at %s: %w", st.Issuer, err)
	}
	chain, err := st.sign(ctx, ep, tok, key)
	if err != nil {
		return nil, err
	}
	if err := st.save(r.opts.StateDir, tok); err != nil {
		return nil, err
	}
	return chain, nil
}

func providerClient(hc *http.Client, caFile string) (*http.Client, error) {
	if hc != nil {
		return hc, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("provider CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("provider CA: %s holds no PEM certificate", caFile)
		}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}

func deviceFlow(ctx context.Context, cfg *oauth2.Config, prompt io.Writer) (*oauth2.Token, error) {
	if cfg.Endpoint.DeviceAuthURL == "" {
		return nil, errors.New("the provider offers no device authorization endpoint; use --browser")
	}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("device authorization: %w", err)
	}
	fmt.Fprintf(prompt, "To sign in, open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
	if da.VerificationURIComplete != "" {
		fmt.Fprintf(prompt, "(or open %s)\n", da.VerificationURIComplete)
	}
	tok, err := cfg.DeviceAccessToken(ctx, da)
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "expired_token":
		return nil, ErrDeviceCodeExpired
	case errors.As(err, &re) && re.ErrorCode == "access_denied":
		return nil, ErrSignInDenied
	case err != nil:
		return nil, fmt.Errorf("waiting for the sign-in: %w", err)
	}
	return tok, nil
}

// browserFlow runs the code flow with PKCE, state and nonce, the redirect
// landing on a one-shot loopback listener (RFC 8252).
func browserFlow(ctx context.Context, cfg *oauth2.Config, prompt io.Writer, open func(string) error) (*oauth2.Token, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("loopback listener: %w", err)
	}
	defer ln.Close()
	c := *cfg
	c.RedirectURL = fmt.Sprintf("http://localhost:%d/callback", ln.Addr().(*net.TCPAddr).Port)
	state, nonce := randomString(), randomString()
	verifier := oauth2.GenerateVerifier()
	u := c.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))
	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			res.err = errors.New("the sign-in answer has the wrong state")
		case q.Get("error") != "":
			res.err = fmt.Errorf("the provider refused: %s %s", q.Get("error"), q.Get("error_description"))
		default:
			res.code = q.Get("code")
		}
		msg := "Signed in. You can close this window."
		if res.err != nil {
			msg = "Sign-in failed: " + res.err.Error()
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!DOCTYPE html><title>dstm-client</title><p>%s</p>\n", html.EscapeString(msg))
		select {
		case done <- res:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	fmt.Fprintf(prompt, "Sign in in your browser: %s\n", u)
	if open != nil {
		if err := open(u); err != nil {
			fmt.Fprintf(prompt, "(could not open a browser: %v; open the address yourself)\n", err)
		}
	}
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := c.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("code exchange: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if got, _ := unverifiedClaim(raw, "nonce"); got != nonce {
		return nil, errors.New("the ID token does not carry this sign-in's nonce")
	}
	return tok, nil
}

// unverifiedClaim reads a string claim of a JWT without verifying it: the
// gateway verifies; the client only needs its name for the CSR.
func unverifiedClaim(raw, claim string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("the ID token is not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("ID token payload: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("ID token payload: %w", err)
	}
	v, _ := m[claim].(string)
	if v == "" {
		return "", fmt.Errorf("the ID token has no %q claim", claim)
	}
	return v, nil
}

func randomString() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func getJSON(ctx context.Context, ep endpoint, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.url(path), nil)
	if err != nil {
		return err
	}
	return do(ep.client(), req, out)
}
