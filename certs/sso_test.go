package certs_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/internal/oidctest"
	"github.com/dstmgw/dstm/sso"
)

const loopbackRedirect = "http://localhost/callback"

type ssoFixture struct {
	p      *oidctest.Provider
	ca     *certs.CA
	clk    *fakeClock
	gw     *gateway
	caFile string
}

func newSSOFixture(t *testing.T) *ssoFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := oidctest.Start(ln, "127.0.0.1", []oidctest.Client{{ID: "dstm", RedirectURIs: []string{loopbackRedirect}}},
		[]oidctest.User{
			{Email: "Alice@corp.example", Password: "pw", Groups: []string{"eng", "vpn"}},
			{Email: "bob@corp.example", Password: "pw", Groups: []string{"vpn"}},
			{Email: "carol@corp.example", Password: "pw", Groups: []string{"sales"}},
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	clk := newClock()
	ca, _ := newCA(t, clk)
	v, err := sso.New(sso.Config{Issuer: p.Issuer, ClientID: "dstm", AllowedGroups: []string{"vpn"},
		Groups: map[string]string{"eng": "staff"}}, sso.Options{HTTPClient: p.HTTPClient(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ca.SetSignIn(v)
	caFile := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(caFile, p.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &ssoFixture{p: p, ca: ca, clk: clk, gw: serve(t, ca, "tcp", "127.0.0.1:0"), caFile: caFile}
}

// browserEnroll enrolls through the loopback code flow, the provider's login
// page filled as a browser would.
func (f *ssoFixture) browserEnroll(t *testing.T, email, dir string) (*enroll.State, error) {
	t.Helper()
	open := func(u string) error {
		go func() {
			back, err := f.p.LoginCode(t.Context(), u, "http://localhost:", email, "pw")
			if err != nil {
				t.Errorf("login: %v", err)
				return
			}
			resp, err := http.Get(back.String())
			if err == nil {
				resp.Body.Close()
			}
		}()
		return nil
	}
	return enroll.EnrollSSO(t.Context(), enroll.SSOOptions{
		Gateway: f.gw.addr, Fingerprint: f.ca.Fingerprint(), StateDir: dir,
		Browser: true, OpenURL: open, ProviderCAFile: f.caFile,
	})
}

// TestSSOEnrollRenewRemove: sign in (browser and device flows), the
// certificate carries the mapped policy groups, renewal signs in again with
// the refresh token, mutual-TLS renewal is refused, and a user removed from
// the provider cannot renew.
func TestSSOEnrollRenewRemove(t *testing.T) {
	f := newSSOFixture(t)
	dir := filepath.Join(t.TempDir(), "alice")
	st, err := f.browserEnroll(t, "Alice@corp.example", dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Identity != "alice@corp.example" || strings.Join(certs.CertificateGroups(st.Leaf), ",") != "staff" {
		t.Fatalf("identity %q groups %v", st.Identity, st.Leaf.Subject.OrganizationalUnit)
	}
	if fi, err := os.Stat(filepath.Join(dir, enroll.SSOFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sso state: %v %v", fi, err)
	}

	// The device flow, as on a machine without a browser.
	pr, pw := io.Pipe()
	codes := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`enter the code (\S+)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				codes <- m[1]
			}
		}
	}()
	go func() {
		select {
		case code := <-codes:
			if err := f.p.LoginDevice(t.Context(), code, "bob@corp.example", "pw", true); err != nil {
				t.Errorf("device login: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("no device code printed")
		}
	}()
	bob, err := enroll.EnrollSSO(t.Context(), enroll.SSOOptions{Gateway: f.gw.addr, Fingerprint: f.ca.Fingerprint(),
		StateDir: filepath.Join(t.TempDir(), "bob"), Prompt: pw, ProviderCAFile: f.caFile})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bob.Identity != "bob@corp.example" || len(bob.Leaf.Subject.OrganizationalUnit) != 0 {
		t.Fatalf("bob: %q %v", bob.Identity, bob.Leaf.Subject.OrganizationalUnit)
	}

	r, err := enroll.NewRenewer(enroll.RenewerOptions{StateDir: dir, Gateway: f.gw.addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Renew(t.Context()); err != nil {
		t.Fatalf("renew by refresh token: %v", err)
	}
	if r.State().Leaf.SerialNumber.Cmp(st.Leaf.SerialNumber) == 0 || !r.State().Leaf.PublicKey.(*ecdsa.PublicKey).Equal(st.Leaf.PublicKey) {
		t.Fatal("renewal did not issue a new certificate for the same key")
	}
	// Mutual TLS renewal of a signed-in certificate is refused.
	if _, err := f.ca.Renew(t.Context(), r.State().Leaf, nil); !errors.Is(err, certs.ErrSSORenew) {
		t.Fatalf("mTLS renew of a signed-in certificate: %v", err)
	}
	f.p.RemoveUser("Alice@corp.example")
	if err := r.Renew(t.Context()); !errors.Is(err, enroll.ErrSignInAgain) {
		t.Fatalf("renew after removal: %v, want ErrSignInAgain", err)
	}
	// Revocation by identity covers signed-in certificates.
	if res, err := f.ca.RevokeIdentity(t.Context(), "alice@corp.example"); err != nil || len(res) < 2 {
		t.Fatalf("revoke identity: %v %v", res, err)
	}
}

// rawIDToken signs in through the public client's code flow.
func (f *ssoFixture) rawIDToken(t *testing.T, email string) string {
	t.Helper()
	ctx := oidc.ClientContext(t.Context(), f.p.HTTPClient())
	prov, err := oidc.NewProvider(ctx, f.p.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: "dstm", Endpoint: prov.Endpoint(), RedirectURL: "http://localhost:1/callback", Scopes: []string{"openid", "email"}}
	ver := oauth2.GenerateVerifier()
	back, err := f.p.LoginCode(ctx, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(ver)), "http://localhost:", email, "pw")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(ver))
	if err != nil {
		t.Fatal(err)
	}
	return tok.Extra("id_token").(string)
}

func TestSSORefusals(t *testing.T) {
	f := newSSOFixture(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bobCSR := csrFor(t, key, "bob@corp.example", "bob@corp.example")
	bob := f.rawIDToken(t, "bob@corp.example")

	if _, err := f.ca.EnrollSSO(context.Background(), bob, csrFor(t, key, "alice@corp.example", "alice@corp.example")); !errors.Is(err, certs.ErrIdentityMismatch) {
		t.Fatalf("CSR for someone else: %v", err)
	}
	if _, err := f.ca.EnrollSSO(context.Background(), bob, bobCSR); err != nil {
		t.Fatalf("first use (after a refused CSR, which does not spend it): %v", err)
	}
	if _, err := f.ca.EnrollSSO(context.Background(), bob, bobCSR); !errors.Is(err, certs.ErrTokenUsed) {
		t.Fatalf("replay: %v", err)
	}
	// The same token written differently (a line break in the signature) is the same token.
	dot := strings.LastIndex(bob, ".")
	if _, err := f.ca.EnrollSSO(context.Background(), bob[:dot+5]+"\n"+bob[dot+5:], bobCSR); !errors.Is(err, certs.ErrTokenUsed) {
		t.Fatalf("replay with a line break: %v", err)
	}
	carol := f.rawIDToken(t, "carol@corp.example")
	carolCSR := csrFor(t, key, "carol@corp.example", "carol@corp.example")
	if _, err := f.ca.EnrollSSO(context.Background(), carol, carolCSR); !errors.Is(err, certs.ErrSSODenied) {
		t.Fatalf("user outside the allowed groups: %v", err)
	}
	if _, err := f.ca.EnrollSSO(context.Background(), "eyJ.garbage.x", bobCSR); !errors.Is(err, certs.ErrBadToken) {
		t.Fatalf("garbage token: %v", err)
	}
	late := f.rawIDToken(t, "bob@corp.example")
	f.clk.Advance(11 * time.Minute)
	if _, err := f.ca.EnrollSSO(context.Background(), late, bobCSR); !errors.Is(err, certs.ErrTokenExpired) {
		t.Fatalf("sign-in 11 minutes old: %v", err)
	}
	f.ca.SetSignIn(nil)
	if _, err := f.ca.EnrollSSO(context.Background(), late, bobCSR); !errors.Is(err, certs.ErrSSODisabled) {
		t.Fatalf("disabled: %v", err)
	}
	if st, _ := certs.HTTPStatus(certs.ErrSSODisabled); st != http.StatusNotFound {
		t.Fatalf("disabled status %d", st)
	}
}

// TestSSORevokedDeviceCannotRenew: once a certificate of the identity is revoked (a lost
// laptop), the refresh token on that laptop gets nothing more (its ID tokens keep the old
// auth_time); a new interactive sign-in does. Renewals by sign-in are linked to the
// certificate they renew.
func TestSSORevokedDeviceCannotRenew(t *testing.T) {
	f := newSSOFixture(t)
	dir := filepath.Join(t.TempDir(), "laptop")
	st, err := f.browserEnroll(t, "Alice@corp.example", dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := enroll.NewRenewer(enroll.RenewerOptions{StateDir: dir, Gateway: f.gw.addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	renewed, err := f.ca.Certificate(r.State().Leaf.SerialNumber.String())
	if err != nil || renewed.RenewalOf != st.Leaf.SerialNumber.String() {
		t.Fatalf("renewal by sign-in not linked: %+v %v", renewed, err)
	}
	// The revocation happens now (the CA's clock set to the provider's).
	f.clk.Advance(time.Since(f.clk.Now()))
	if err := f.ca.Revoke(t.Context(), renewed.Serial, "lost laptop"); err != nil {
		t.Fatal(err)
	}
	err = r.Renew(t.Context())
	var ae *enroll.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(ae.Message, "sign in again") {
		t.Fatalf("renewal of a revoked laptop by its refresh token: %v", err)
	}
	// An interactive sign-in after the revocation works (auth_time has whole seconds: the
	// first attempts in the revocation's own second are refused too).
	eventually(t, 5*time.Second, func() error {
		_, err := f.browserEnroll(t, "Alice@corp.example", filepath.Join(t.TempDir(), "new-laptop"))
		return err
	})
}

func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		<-time.After(200 * time.Millisecond)
	}
}
