// Package oidctest runs a real OpenID provider for tests: zitadel/oidc's
// provider (package op, OpenID certified) with the user directory of its
// example server, served over TLS on a listener the caller gives. What this
// package adds is only what every deployment of that library writes itself:
// the directory (users, passwords, groups, changeable while it runs) and the
// registered clients.
//
// Flows served: authorization code with PKCE, refresh tokens, the device
// authorization grant (RFC 8628, user form at /device), discovery and keys.
// ID tokens carry email, email_verified and a "groups" claim.
package oidctest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// User is one account in the directory. Email is also the login name.
type User struct {
	Email    string
	Password string
	Groups   []string
	// Unverified marks the email as not verified.
	Unverified bool
}

// Client is a registered OAuth client. A client without Secret is public
// (native: PKCE, loopback redirects on any port, device grant); one with a
// Secret is a confidential web client with exactly RedirectURIs.
type Client struct {
	ID           string
	Secret       string
	RedirectURIs []string
}

// Provider is a running OpenID provider.
type Provider struct {
	// Issuer is the provider's issuer URL ("https://HOST:PORT/").
	Issuer string
	// CAPEM is the PEM certificate that signs the provider's TLS certificate.
	CAPEM []byte

	dir    *directory
	store  *store
	srv    *http.Server
	done   chan struct{}
	caPool *x509.CertPool
}

// Start serves a provider on ln until Close. host is the name or address
// clients use to reach ln (the issuer's host; also the TLS certificate's name).
func Start(ln net.Listener, host string, clients []Client, users []User) (*Provider, error) {
	_, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		return nil, err
	}
	issuer := "https://" + net.JoinHostPort(host, port) + "/"
	caPEM, cert, pool, err := selfSigned(host)
	if err != nil {
		return nil, err
	}
	dir := &directory{users: map[string]User{}}
	for _, u := range users {
		dir.set(u)
	}
	reg := map[string]*storage.Client{}
	ours := map[string]Client{}
	for _, c := range clients {
		if c.Secret == "" {
			reg[c.ID] = storage.NativeClient(c.ID, c.RedirectURIs...)
		} else {
			reg[c.ID] = storage.WebClient(c.ID, c.Secret, c.RedirectURIs...)
		}
		ours[c.ID] = c
	}
	st := &store{Storage: storage.NewStorageWithClients(dir, reg), dir: dir, clients: ours}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	router := exampleop.SetupServer(issuer, st, logger, false)
	p := &Provider{
		Issuer: issuer, CAPEM: caPEM, dir: dir, store: st, done: make(chan struct{}), caPool: pool,
		srv: &http.Server{
			Handler:           router,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          nil,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		},
	}
	go func() {
		defer close(p.done)
		_ = p.srv.ServeTLS(ln, "", "")
	}()
	return p, nil
}

// HTTPClient returns a client that trusts the provider's certificate.
func (p *Provider) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.caPool, MinVersion: tls.VersionTLS12}},
	}
}

// SetUser adds or replaces a user.
func (p *Provider) SetUser(u User) { p.dir.set(u) }

// ReplaceUsers replaces the whole directory.
func (p *Provider) ReplaceUsers(users []User) {
	p.dir.mu.Lock()
	p.dir.users = map[string]User{}
	p.dir.mu.Unlock()
	for _, u := range users {
		p.dir.set(u)
	}
}

// RemoveUser deletes a user: its refresh tokens stop working.
func (p *Provider) RemoveUser(email string) { p.dir.remove(email) }

// Close stops the provider.
func (p *Provider) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	<-p.done
	return err
}

// directory implements the example storage's UserStore; user IDs are the
// emails.
type directory struct {
	mu    sync.Mutex
	users map[string]User
}

func (d *directory) set(u User) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u.Groups = slices.Clone(u.Groups)
	d.users[u.Email] = u
}

func (d *directory) remove(email string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.users, email)
}

func (d *directory) get(id string) (User, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.users[id]
	return u, ok
}

func (d *directory) GetUserByID(id string) *storage.User {
	u, ok := d.get(id)
	if !ok {
		return nil
	}
	return &storage.User{
		ID: u.Email, Username: u.Email, Password: u.Password, Email: u.Email,
		EmailVerified: !u.Unverified, FirstName: u.Email, PreferredLanguage: language.English,
	}
}

func (d *directory) GetUserByUsername(name string) *storage.User { return d.GetUserByID(name) }

func (d *directory) ExampleClientID() string { return "service" }

// store is the example storage with our directory's groups in the ID token
// and userinfo, and our clients' registration.
type store struct {
	*storage.Storage
	dir     *directory
	clients map[string]Client
}

func (s *store) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	return s.addGroups(ui, req.GetSubject())
}

func (s *store) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, ui, tokenID, subject, origin); err != nil {
		return err
	}
	return s.addGroups(ui, ui.Subject)
}

func (s *store) addGroups(ui *oidc.UserInfo, subject string) error {
	u, ok := s.dir.get(subject)
	if !ok {
		return errors.New("user not found")
	}
	ui.AppendClaims("groups", slices.Clone(u.Groups))
	return nil
}

// TokenRequestByRefreshToken refuses the refresh tokens of removed users,
// as a directory does when an account is deleted.
func (s *store) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	r, err := s.Storage.TokenRequestByRefreshToken(ctx, token)
	if err != nil {
		return nil, err
	}
	if _, ok := s.dir.get(r.GetSubject()); !ok {
		return nil, fmt.Errorf("user %q no longer exists", r.GetSubject())
	}
	if r.GetClientID() == "" && len(r.GetAudience()) > 0 {
		// The example storage does not record the client of tokens issued
		// by the device grant; their audience is that client.
		return refreshRequest{RefreshTokenRequest: r, clientID: r.GetAudience()[0]}, nil
	}
	return r, nil
}

type refreshRequest struct {
	op.RefreshTokenRequest
	clientID string
}

func (r refreshRequest) GetClientID() string { return r.clientID }

func (s *store) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	reg, ok := s.clients[id]
	if !ok {
		return nil, errors.New("client not found")
	}
	return registered{Client: c, reg: reg}, nil
}

// registered adjusts the example's client types: public clients may also
// use the device grant; redirect URIs are exactly the registered ones.
type registered struct {
	op.Client
	reg Client
}

func (c registered) GrantTypes() []oidc.GrantType {
	g := c.Client.GrantTypes()
	if c.reg.Secret == "" {
		g = append(slices.Clone(g), oidc.GrantTypeDeviceCode)
	}
	return g
}

// IDTokenUserinfoClaimsAssertion puts email and groups into the ID token,
// as most providers do.
func (c registered) IDTokenUserinfoClaimsAssertion() bool { return true }

func (c registered) RedirectURIs() []string {
	if len(c.reg.RedirectURIs) > 0 {
		return c.reg.RedirectURIs
	}
	return c.Client.RedirectURIs()
}

func selfSigned(host string) (caPEM []byte, cert tls.Certificate, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, cert, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "oidctest " + host},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	if a, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = []net.IP{a.AsSlice()}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, cert, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, cert, nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return caPEM, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
