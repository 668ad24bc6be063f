package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dstmgw/dstm/internal/browsertest"
	"github.com/dstmgw/dstm/internal/oidctest"
)

// The web console scenario: the OpenID provider (testop) and the console on the gateway's
// IPv6 address, Chromium in the client namespace (the laptop's browser).
const (
	opPort         = 9443
	consolePort    = 8443
	operator       = "ops@e2e.test" // in the provider's vpn-admins group
	userPassword   = "e2e-password"
	consoleClient  = "dstm-console"
	consoleSecret  = "e2e-console-secret"
	browserTimeout = 2 * time.Minute
)

func (e *env) consoleURL() string {
	return "https://" + net.JoinHostPort(e.tp.GatewayV6.String(), strconv.Itoa(consolePort))
}

func (e *env) issuer() string {
	return "https://" + net.JoinHostPort(e.tp.GatewayV6.String(), strconv.Itoa(opPort)) + "/"
}

// consoleConfig is the sso and console sections of the gateway's configuration.
func (e *env) consoleConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sso:\n  issuer: %s\n  client_id: dstm-client\n  ca_file: %s\n  allowed_groups: [vpn]\n  admin_groups: [vpn-admins]\n",
		e.issuer(), filepath.Join(e.dir, "idp.pem"))
	fmt.Fprintf(&b, "console:\n  listen: %q\n  url: %s\n  client_id: %s\n  client_secret_file: %s\n",
		net.JoinHostPort(e.tp.GatewayV6.String(), strconv.Itoa(consolePort)), e.consoleURL(), consoleClient,
		filepath.Join(e.dir, "console.secret"))
	return b.String()
}

// startProvider runs testop in the gateway namespace (before `dstm-gateway init`, which
// checks sso.ca_file) with the directory: alice (a user) and the operator.
func startProvider(e *env) {
	t := e.t
	users, err := json.Marshal([]oidctest.User{
		{Email: identity, Password: userPassword, Groups: []string{"vpn"}},
		{Email: operator, Password: userPassword, Groups: []string{"vpn", "vpn-admins"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(e.dir, "users.json")
	for path, b := range map[string][]byte{usersFile: users, filepath.Join(e.dir, "console.secret"): []byte(consoleSecret + "\n")} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(e.dir, "testop.log")
	p := startProc(t, "testop", e.tp.Gateway, log, bins.testop,
		"-listen", net.JoinHostPort(e.tp.GatewayV6.String(), strconv.Itoa(opPort)), "-host", e.tp.GatewayV6.String(),
		"-users", usersFile, "-ca-out", filepath.Join(e.dir, "idp.pem"),
		"-client", "dstm-client", "-client", consoleClient+":"+consoleSecret+":"+e.consoleURL()+"/auth/callback")
	eventually(t, 20*time.Second, "the OpenID provider", func() error {
		if p.exited() {
			t.Fatalf("testop exited: %v", p.err)
		}
		b, err := os.ReadFile(log)
		if err != nil || !strings.Contains(string(b), "ready "+e.issuer()) {
			return fmt.Errorf("not ready: %q %v", b, err)
		}
		return nil
	})
}

// browserTrust returns what the browser must trust: the provider's certificate and the
// chain the console presents (read from the client namespace).
func (e *env) browserTrust() [][]byte {
	t := e.t
	idp, err := os.ReadFile(filepath.Join(e.dir, "idp.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	raw, err := nsDialer(e.tp.Client)(ctx, "tcp", net.JoinHostPort(e.tp.GatewayV6.String(), strconv.Itoa(consolePort)))
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	defer c.Close()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	out := [][]byte{idp}
	for _, pc := range c.ConnectionState().PeerCertificates {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pc.Raw}))
	}
	return out
}

// browserSignIn opens a Chromium in the client namespace and signs in as email through the
// provider's page, starting at path; it waits for the element with id.
func (e *env) browserSignIn(trust [][]byte, path, email, id string) context.Context {
	t := e.t
	ctx := browsertest.New(t, browsertest.Options{TrustPEM: trust, Netns: e.tp.Client.Name})
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx,
		browsertest.Navigate(e.consoleURL()+path),
		chromedp.WaitVisible(chromedp.ID("sso-login")),
		chromedp.Click(chromedp.ID("sso-login")),
		browsertest.ProviderLogin(email, userPassword),
		chromedp.WaitVisible(chromedp.ID(id)),
	); err != nil {
		browsertest.Screenshot(t, ctx, "sign-in-failed-"+email)
		t.Fatalf("sign-in as %s: %v", email, err)
	}
	return ctx
}

func pageText(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("text of #%s: %v", id, err)
	}
	return v
}

// TestConsole: the real binaries and the provider as a process in namespaces, Chromium in the
// client namespace. The operator signs in and kicks the laptop's live session: it is gone
// from the gateway. Alice (the laptop's identity, token-enrolled) signs in, finds the laptop's
// certificate carrying its session, and revokes it: the client's tunnel is down within a
// second. She then enrolls the laptop again with the dstm-client.yaml the console hands out
// (`dstm-client enroll --config`, signing in by the device flow), and its tunnel is back.
func TestConsole(t *testing.T) {
	e := newEnv(t, gwOptions{console: true, prepare: startProvider})
	e.up("dtls")
	s := e.mustSession()
	trust := e.browserTrust()

	ops := e.browserSignIn(trust, "/ops/sessions", operator, "sessions")
	browsertest.Screenshot(t, ops, "01-operator-sessions")
	if err := chromedp.Do(ops,
		chromedp.Click(chromedp.CSS(`tr[data-session="`+s.ID+`"] a.kick`)),
		chromedp.WaitVisible(chromedp.ID("confirm-kick")),
	); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, ops, "02-kick-confirm")
	kicked := time.Now()
	if err := chromedp.Do(ops, chromedp.Click(chromedp.ID("confirm-kick")), chromedp.WaitVisible(chromedp.ID("message"))); err != nil {
		t.Fatal(err)
	}
	if msg := pageText(t, ops, "message"); !strings.Contains(msg, "Session "+s.ID+" of "+identity+" was closed") {
		t.Fatalf("after the kick: %q", msg)
	}
	browsertest.Screenshot(t, ops, "03-kicked")
	ss, err := e.sessions()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ss {
		if o.ID == s.ID {
			t.Fatalf("session %s still live after the kick", s.ID)
		}
	}
	// The laptop's certificate is still good: it comes back with a new session.
	e.waitClientUp(30*time.Second, kicked)
	s = e.mustSession()

	me := e.browserSignIn(trust, "/", identity, "devices")
	row := `tr[data-serial="` + s.Serial + `"]`
	if err := chromedp.Do(me, chromedp.WaitVisible(chromedp.CSS(row))); err != nil {
		t.Fatalf("the laptop's certificate %s is not on alice's devices page: %v", s.Serial, err)
	}
	if v, err := chromedp.Run(me, chromedp.Text(chromedp.CSS(row+` td[data-field="address"]`))); err != nil || strings.TrimSpace(v) != s.Lease {
		t.Errorf("address on the devices page %q (%v), the gateway's %s", v, err, s.Lease)
	}
	browsertest.Screenshot(t, me, "04-devices")
	if err := chromedp.Do(me, chromedp.Click(chromedp.CSS(row+" a.revoke")), chromedp.WaitVisible(chromedp.ID("confirm-revoke"))); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, me, "05-revoke-confirm")
	if st, err := e.clientStatus(); err != nil || st.State != "up" {
		t.Fatalf("client before the revocation: %+v %v", st, err)
	}
	confirmed := time.Now()
	if err := chromedp.Do(me, chromedp.Click(chromedp.ID("confirm-revoke"))); err != nil {
		t.Fatal(err)
	}
	var down time.Duration
	if err := poll(5*time.Second, 10*time.Millisecond, func() error {
		st, err := e.clientStatus()
		if err != nil {
			return err
		}
		if st.State == "up" {
			return fmt.Errorf("client still up")
		}
		down = time.Since(confirmed)
		return nil
	}); err != nil {
		t.Fatalf("the client's tunnel did not go down: %v", err)
	}
	t.Logf("the client's tunnel went down %v after the revocation was confirmed in the browser", down.Round(time.Millisecond))
	if down > time.Second {
		t.Errorf("the tunnel went down %v after the revocation, want within 1 s", down)
	}
	if err := chromedp.Do(me, chromedp.WaitVisible(chromedp.ID("message"))); err != nil {
		t.Fatal(err)
	}
	if msg := pageText(t, me, "message"); !strings.Contains(msg, "Certificate "+s.Serial+" is revoked") {
		t.Fatalf("after the revocation: %q", msg)
	}
	browsertest.Screenshot(t, me, "06-revoked")
	if ss, err := e.sessions(); err != nil || len(ss) != 0 {
		t.Fatalf("sessions after the revocation: %+v %v", ss, err)
	}

	// Alice enrolls the laptop again with the file the console hands out, signing in with the
	// device flow, and its tunnel comes back.
	e.client.kill()
	conf, err := chromedp.Run(me, chromedp.Evaluate[string](`fetch("/me/config").then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(e.dir, "dstm-client.yaml")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cdir = filepath.Join(e.dir, "client-again")
	e.enrollByDevice(me, confFile)
	e.up("dtls")
	if s2 := e.mustSession(); s2.Serial == s.Serial || s2.Serial == "" {
		t.Fatalf("the re-enrolled laptop's session has serial %q (the revoked one was %s)", s2.Serial, s.Serial)
	}
}

// enrollByDevice runs `dstm-client enroll --config FILE` in the client namespace and signs
// in as alice in the browser ctx with the code it prints (the device flow).
func (e *env) enrollByDevice(ctx context.Context, confFile string) {
	t := e.t
	t.Helper()
	out, err := signInByDevice(t, e, ctx, "enroll-config", []string{bins.client, "--state-dir", e.cdir, "enroll",
		"--config", confFile, "--sso-ca", filepath.Join(e.dir, "idp.pem")}, identity, userPassword)
	if err != nil || !strings.Contains(out, "Enrolled as "+identity) {
		t.Fatalf("dstm-client enroll --config: %v\n%s", err, out)
	}
}
