package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dstmgw/dstm/internal/browsertest"
	"github.com/dstmgw/dstm/internal/oidctest"
)

// idp is the company's OpenID provider of a sign-in scenario: testop in the gateway's
// namespace, on the gateway's IPv6 address (reachable from the laptop without the tunnel).
type idp struct {
	proc      *proc
	issuer    string
	caFile    string
	usersFile string
}

const idpPort = 8443

// startIdP runs the provider with users and the public client "dstm".
func startIdP(t *testing.T, e *env, users []oidctest.User) *idp {
	t.Helper()
	p := &idp{caFile: filepath.Join(e.dir, "idp-ca.pem"), usersFile: filepath.Join(e.dir, "idp-users.json")}
	p.setUsers(t, users)
	addr := netip.AddrPortFrom(e.tp.GatewayV6, idpPort)
	log := filepath.Join(e.dir, "idp.log")
	p.proc = startProc(t, "idp", e.tp.Gateway, log, bins.testop, "-listen", addr.String(), "-host", e.tp.GatewayV6.String(),
		"-users", p.usersFile, "-ca-out", p.caFile, "-client", "dstm::http://localhost/callback")
	re := regexp.MustCompile(`ready (\S+)`)
	eventually(t, 20*time.Second, "the identity provider", func() error {
		if p.proc.exited() {
			t.Fatalf("the identity provider exited: %v", p.proc.err)
		}
		b, _ := os.ReadFile(log)
		m := re.FindSubmatch(b)
		if m == nil {
			return fmt.Errorf("not ready")
		}
		p.issuer = string(m[1])
		return nil
	})
	return p
}

func (p *idp) setUsers(t *testing.T, users []oidctest.User) {
	t.Helper()
	b, err := json.Marshal(users)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.usersFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rootFingerprint is the gateway's root CA fingerprint, as an operator reads it.
func rootFingerprint(t *testing.T, e *env) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "state", "ca", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// TestSSOEnrollment: users enroll by signing in at a real OpenID provider, in headless
// Chromium, with the device flow (the code typed on the provider's page) and with the
// browser flow (PKCE, redirect to the client's loopback listener); the certificate carries the
// policy group the directory gives, and the tunnel comes up with that group's routes for an
// identity the policy does not list (unknown identities refused). A user outside the allowed
// groups is refused with the gateway's reason.
func TestSSOEnrollment(t *testing.T) {
	var p *idp
	users := []oidctest.User{
		{Email: identity, Password: "alice-pw", Groups: []string{"eng", "vpn"}},
		{Email: "carol@e2e.test", Password: "carol-pw", Groups: []string{"eng", "vpn"}},
		{Email: "bob@e2e.test", Password: "bob-pw", Groups: []string{"contractors"}},
	}
	e := newEnv(t, gwOptions{prepare: func(e *env) {
		p = startIdP(t, e, users)
		f, err := os.OpenFile(e.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintf(f, "sso:\n  issuer: %s\n  client_id: dstm\n  ca_file: %s\n  allowed_domains: [e2e.test]\n  allowed_groups: [vpn]\n  groups: {eng: staff}\n",
			p.issuer, p.caFile)
		fmt.Fprintf(f, "policy:\n  unknown: refuse\n  groups:\n    staff: {routes: [%s/32, 10.99.0.0/16]}\n", e.tp.ServerV4)
	}})
	fp := rootFingerprint(t, e)
	caPEM, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	browser := browsertest.New(t, browsertest.Options{TrustPEM: [][]byte{caPEM}, Netns: e.tp.Client.Name})

	// The device flow: the client prints an address and a code; the user types the code on
	// the provider's page (here in the laptop's namespace; any device would do).
	enrollArgs := func(dir string, more ...string) []string {
		return append([]string{bins.client, "--state-dir", dir, "enroll", "--sso", "--gateway", e.gwAddr,
			"--fingerprint", fp, "--sso-ca", p.caFile}, more...)
	}
	out, err := signInByDevice(t, e, browser, "alice", enrollArgs(e.cdir), identity, "alice-pw")
	if err != nil || !strings.Contains(out, "Enrolled as "+identity) || !strings.Contains(out, "Groups: staff") {
		t.Fatalf("device-flow enrollment: %v\n%s", err, out)
	}

	// The directory's group gives the routes of policy group staff; the policy lists no one.
	st := e.up("dtls")
	if !slices.Contains(st.Routes, "10.99.0.0/16") {
		t.Fatalf("routes %v: want those of group staff", st.Routes)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := get(ctx, httpIn(e.tp.Client, 10*time.Second), e.srv.base+"/"); err != nil {
		t.Fatalf("through the tunnel: %v", err)
	}

	// Outside the allowed groups: refused, with the reason, and no certificate written.
	bobDir := filepath.Join(e.dir, "bob")
	out, err = signInByDevice(t, e, browser, "bob", enrollArgs(bobDir), "bob@e2e.test", "bob-pw")
	if err == nil || !strings.Contains(out, "none of the allowed groups") {
		t.Fatalf("bob (not in vpn) enrolled or refused without the reason: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(bobDir, "client.crt")); err == nil {
		t.Fatal("a refused sign-in left a certificate")
	}

	// The browser flow: PKCE, the provider redirects to the client's loopback listener.
	carolDir := filepath.Join(e.dir, "carol")
	log := filepath.Join(e.dir, "carol-enroll.log")
	pr := startProc(t, "carol enroll", e.tp.Client, log, enrollArgs(carolDir, "--browser")...)
	re := regexp.MustCompile(`Sign in in your browser: (\S+)`)
	var m [][]byte
	eventually(t, 20*time.Second, "the sign-in address", func() error {
		b, _ := os.ReadFile(log)
		if m = re.FindSubmatch(b); m == nil {
			return fmt.Errorf("no address printed yet: %q", b)
		}
		return nil
	})
	bctx, bcancel := context.WithTimeout(browser, 60*time.Second)
	defer bcancel()
	if err := chromedp.Do(bctx,
		browsertest.Navigate(string(m[1])),
		browsertest.ProviderLogin("carol@e2e.test", "carol-pw"),
	); err != nil {
		t.Fatalf("browser flow: %v", err)
	}
	// The provider redirects to the client's loopback listener, which answers the page.
	var body string
	eventually(t, 30*time.Second, "the client's loopback page", func() error {
		loc, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			return err
		}
		if !strings.HasPrefix(loc, "http://localhost:") {
			return fmt.Errorf("at %s", loc)
		}
		body, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
		return err
	})
	browsertest.Screenshot(t, bctx, "carol-signed-in")
	if exitErr, timedOut := pr.waitExit(30 * time.Second); timedOut || exitErr != nil {
		b, _ := os.ReadFile(log)
		t.Fatalf("browser-flow enrollment: %v (timed out %v), page %q\n%s", exitErr, timedOut, body, b)
	}
	if b, _ := os.ReadFile(log); !strings.Contains(string(b), "Enrolled as carol@e2e.test") || !strings.Contains(body, "Signed in") {
		t.Fatalf("browser flow: page %q, log %s", body, b)
	}
}

// signInByDevice runs args (dstm-client enroll with --sso or --config) in the laptop's
// namespace and, in the browser, signs in as email with the device code it prints and allows
// the device, as a user does on the provider's pages. It returns the enroll's output and exit
// error.
func signInByDevice(t *testing.T, e *env, browser context.Context, name string, args []string, email, password string) (string, error) {
	t.Helper()
	log := filepath.Join(e.dir, name+"-enroll.log")
	pr := startProc(t, name+" enroll", e.tp.Client, log, args...)
	re := regexp.MustCompile(`open (\S+) and enter the code (\S+)`)
	var m [][]byte
	eventually(t, 20*time.Second, "the device code", func() error {
		b, _ := os.ReadFile(log)
		if m = re.FindSubmatch(b); m == nil {
			return fmt.Errorf("no code printed yet: %q", b)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(browser, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx,
		browsertest.Navigate(string(m[1])),
		chromedp.WaitVisible(chromedp.ID("user_code")),
		chromedp.SendKeys(chromedp.ID("user_code"), string(m[2])),
		chromedp.Click(chromedp.CSS("button[type=submit]")),
		browsertest.ProviderLogin(email, password),
		chromedp.WaitVisible(chromedp.CSS("button.green")),
	); err != nil {
		t.Fatalf("%s: sign-in page: %v", name, err)
	}
	browsertest.Screenshot(t, ctx, name+"-device-confirm")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("button.green"))); err != nil {
		t.Fatalf("%s: allow: %v", name, err)
	}
	exitErr, timedOut := pr.waitExit(30 * time.Second)
	if timedOut {
		t.Fatalf("%s: enroll did not finish after the sign-in", name)
	}
	b, _ := os.ReadFile(log)
	return string(b), exitErr
}
