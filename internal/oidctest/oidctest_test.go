package oidctest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

func start(t *testing.T) *Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(ln, "127.0.0.1",
		[]Client{{ID: "native"}, {ID: "web", Secret: "s3cret", RedirectURIs: []string{"https://gw.example/cb"}}},
		[]User{{Email: "alice@corp.example", Password: "pw", Groups: []string{"eng", "vpn"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type groupsClaims struct {
	Email  string   `json:"email"`
	Groups []string `json:"groups"`
}

// TestCodeFlowPKCE: a confidential client's code flow with PKCE; the ID
// token verifies with go-oidc and carries the directory's groups.
func TestCodeFlowPKCE(t *testing.T) {
	p := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = oidc.ClientContext(ctx, p.HTTPClient())
	prov, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: "web", ClientSecret: "s3cret", Endpoint: prov.Endpoint(),
		RedirectURL: "https://gw.example/cb", Scopes: []string{"openid", "email"}}
	verifier := oauth2.GenerateVerifier()
	u := cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier))
	if _, err := p.LoginCode(ctx, u, cfg.RedirectURL, "alice@corp.example", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	back, err := p.LoginCode(ctx, u, cfg.RedirectURL, "alice@corp.example", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if back.Query().Get("state") != "st" {
		t.Fatalf("state %q", back.Query().Get("state"))
	}
	tok, err := cfg.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := prov.Verifier(&oidc.Config{ClientID: "web"}).Verify(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	var c groupsClaims
	if err := idt.Claims(&c); err != nil {
		t.Fatal(err)
	}
	if c.Email != "alice@corp.example" || strings.Join(c.Groups, ",") != "eng,vpn" {
		t.Fatalf("claims %+v", c)
	}
}

// TestDeviceFlowAndRemoval: a public client's device grant, then a refresh
// that works until the user is removed from the directory.
func TestDeviceFlowAndRemoval(t *testing.T) {
	p := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, p.HTTPClient())
	prov, err := oidc.NewProvider(oidc.ClientContext(ctx, p.HTTPClient()), p.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: "native", Endpoint: prov.Endpoint(), Scopes: []string{"openid", "email", "offline_access"}}
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if da.VerificationURI == "" || da.UserCode == "" {
		t.Fatalf("device auth %+v", da)
	}
	if err := p.LoginDevice(ctx, da.UserCode, "alice@corp.example", "pw", true); err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Extra("id_token") == nil || tok.RefreshToken == "" {
		t.Fatalf("token without id_token or refresh token: %+v", tok)
	}
	fresh, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	p.RemoveUser("alice@corp.example")
	if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: fresh.RefreshToken}).Token(); err == nil {
		t.Fatal("refresh for a removed user succeeded")
	}
}
