package sso

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dstmgw/dstm/internal/oidctest"
)

const redirect = "https://gw.example/auth/callback"

func startProvider(t *testing.T) *oidctest.Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := oidctest.Start(ln, "127.0.0.1",
		[]oidctest.Client{{ID: "dstm"}, {ID: "console", Secret: "s", RedirectURIs: []string{redirect}}},
		[]oidctest.User{
			{Email: "Alice@Corp.Example", Password: "pw", Groups: []string{"eng", "vpn", "vpn-admins"}},
			{Email: "bob@corp.example", Password: "pw", Groups: []string{"sales"}},
			{Email: "eve@evil.example", Password: "pw", Groups: []string{"vpn"}},
			{Email: "mallory@corp.example", Password: "pw", Groups: []string{"vpn"}, Unverified: true},
			{Email: "trudy@ſales.example", Password: "pw", Groups: []string{"sales"}},
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// idToken signs in as email through the console client's code flow.
func idToken(t *testing.T, p *oidctest.Provider, email string) string {
	t.Helper()
	ctx := oidc.ClientContext(context.Background(), p.HTTPClient())
	prov, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: "console", ClientSecret: "s", Endpoint: prov.Endpoint(), RedirectURL: redirect,
		Scopes: []string{"openid", "email"}}
	ver := oauth2.GenerateVerifier()
	back, err := p.LoginCode(ctx, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(ver), oidc.Nonce("n0")), redirect, email, "pw")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	return raw
}

func TestVerify(t *testing.T) {
	p := startProvider(t)
	other := startProvider(t)
	cfg := Config{
		Issuer: p.Issuer, ClientID: "dstm",
		AllowedDomains: []string{"corp.example"}, AllowedGroups: []string{"vpn", "sales"},
		Groups: map[string]string{"eng": "staff", "vpn": "staff", "sales": "sales"}, AdminGroups: []string{"vpn-admins"},
	}
	alice, bob := idToken(t, p, "Alice@Corp.Example"), idToken(t, p, "bob@corp.example")
	eve, mallory := idToken(t, p, "eve@evil.example"), idToken(t, p, "mallory@corp.example")
	foreign := idToken(t, other, "Alice@Corp.Example")
	lookalike := idToken(t, p, "trudy@ſales.example")
	now := time.Now()
	for _, tc := range []struct {
		name     string
		token    string
		audience string
		clock    time.Time
		mut      func(*Config)
		want     error
		check    func(*testing.T, Claims)
	}{
		{name: "operator", token: alice, audience: "console", check: func(t *testing.T, c Claims) {
			if c.Identity != "alice@corp.example" || !c.Admin || strings.Join(c.PolicyGroups, ",") != "staff" ||
				strings.Join(c.DirectoryGroups, ",") != "eng,vpn,vpn-admins" || c.Nonce != "n0" || len(c.TokenHash) != 64 {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "user", token: bob, audience: "console", check: func(t *testing.T, c Claims) {
			if c.Admin || strings.Join(c.PolicyGroups, ",") != "sales" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "wrong audience", token: alice, audience: "dstm", want: ErrInvalidToken},
		{name: "other issuer", token: foreign, audience: "console", want: ErrInvalidToken},
		{name: "expired", token: alice, audience: "console", clock: now.Add(3 * time.Hour), want: ErrInvalidToken},
		{name: "tampered", token: alice[:len(alice)-4] + "AAAA", audience: "console", want: ErrInvalidToken},
		{name: "garbage", token: "not.a.jwt", audience: "console", want: ErrInvalidToken},
		{name: "empty", token: " ", audience: "console", want: ErrInvalidToken},
		{name: "other domain", token: eve, audience: "console", want: ErrNotAllowed},
		{name: "unverified email", token: mallory, audience: "console", want: ErrNotAllowed},
		{name: "look-alike domain", token: lookalike, audience: "console", mut: func(c *Config) { c.AllowedDomains = []string{"sales.example"} }, want: ErrNotAllowed},
		{name: "non-ASCII identity", token: lookalike, audience: "console", mut: func(c *Config) { c.AllowedDomains = nil }, want: ErrNotAllowed},
		{name: "not in allowed groups", token: bob, audience: "console", mut: func(c *Config) { c.AllowedGroups = []string{"vpn"} }, want: ErrNotAllowed},
		{name: "no domain rule", token: eve, audience: "console", mut: func(c *Config) { c.AllowedDomains = nil }, check: func(t *testing.T, c Claims) {
			if c.Identity != "eve@evil.example" {
				t.Fatalf("%+v", c)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.mut != nil {
				tc.mut(&c)
			}
			clock := tc.clock
			if clock.IsZero() {
				clock = now
			}
			v, err := New(c, Options{HTTPClient: p.HTTPClient(), Now: func() time.Time { return clock }})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(context.Background(), tc.token, tc.audience)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
		})
	}
}

// TestProviderDown: a provider that does not answer is ErrUnavailable, and
// the verifier works once it answers (no restart).
func TestProviderDown(t *testing.T) {
	p := startProvider(t)
	tok := idToken(t, p, "bob@corp.example")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	v, err := New(Config{Issuer: "https://" + addr + "/", ClientID: "dstm"}, Options{HTTPClient: p.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok, "console"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
	if _, err := v.Endpoint(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("endpoint err %v", err)
	}
}

func TestValidate(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	groups := map[string]bool{"staff": true}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{Issuer: "https://idp.example/", ClientID: "dstm", Groups: map[string]string{"eng": "staff"}}, ""},
		{"no issuer", Config{ClientID: "dstm"}, "sso.issuer: required"},
		{"http issuer", Config{Issuer: "http://idp.example", ClientID: "dstm"}, "sso.issuer: \"http://idp.example\" is not an https URL"},
		{"no client", Config{Issuer: "https://idp.example"}, "sso.client_id: required"},
		{"bad ca", Config{Issuer: "https://idp.example", ClientID: "x", CAFile: caFile}, "sso.ca_file: " + caFile + " holds no PEM certificate"},
		{"editable claim", Config{Issuer: "https://idp.example", ClientID: "x", IdentityClaim: "preferred_username"}, "sso.identity_claim"},
		{"bad domain", Config{Issuer: "https://idp.example", ClientID: "x", AllowedDomains: []string{"a@b"}}, "sso.allowed_domains[0]"},
		{"unknown policy group", Config{Issuer: "https://idp.example", ClientID: "x", Groups: map[string]string{"eng": "nope"}}, `sso.groups["eng"]: policy group "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("sso", groups)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
