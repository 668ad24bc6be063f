package console

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/internal/logging/logtest"
	"github.com/dstmgw/dstm/internal/testclock"
)

const testURL = "https://gw.corp.example:8443"

// certVerifier accepts the certificates whose common name it lists (as their identity) and
// refuses the others as revoked.
type certVerifier map[string]bool

func (v certVerifier) VerifyState(cs tls.ConnectionState) (*auth.Peer, error) {
	cn := cs.PeerCertificates[0].Subject.CommonName
	if !v[cn] {
		return nil, auth.ErrRevoked
	}
	return &auth.Peer{Leaf: cs.PeerCertificates[0], Identity: auth.Identity{Name: cn}}, nil
}

type harness struct {
	s       *Server
	b       *fakeBackend
	clk     *testclock.Clock
	log     *logtest.Sink
	metrics *countMetrics
}

// countMetrics counts the console's metrics calls.
type countMetrics struct {
	mu sync.Mutex
	n  map[string]int // "sign-in sso ok", "refused forged_form"
}

func (m *countMetrics) ConsoleSignIn(method, result string) {
	m.add("sign-in " + method + " " + result)
}
func (m *countMetrics) ConsoleRefused(reason string) { m.add("refused " + reason) }

func (m *countMetrics) add(k string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n[k]++
}

func (m *countMetrics) get(k string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[k]
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	clk := testclock.New(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	b := newFakeBackend(clk.Now)
	sink := &logtest.Sink{}
	cm := &countMetrics{n: map[string]int{}}
	s, err := New(Config{
		URL: testURL, Admins: []string{"ops@corp.example"}, Backend: b, Metrics: cm,
		Certificates: certVerifier{"ops@corp.example": true, "carol@corp.example": true},
		Gateway:      "gw.corp.example:3653", Fingerprint: "ab12cd", Logger: zerolog.New(sink), Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{s: s, b: b, clk: clk, log: sink, metrics: cm}
}

// signIn makes an SSO session for identity.
func (h *harness) signIn(identity string, admin bool) session {
	return h.s.store.create(identity, MethodSSO, admin)
}

// request builds a request; with ss, its cookie; a POST gets form and, unless headers say
// otherwise, the console's Origin.
func request(method, path string, ss *session, form url.Values, headers map[string]string) *http.Request {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, testURL+path, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost {
		r.Header.Set("Origin", testURL)
	}
	for k, v := range headers {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	if ss != nil {
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: ss.id})
	}
	return r
}

func (h *harness) do(r *http.Request) (*http.Response, string) {
	w := httptest.NewRecorder()
	h.s.Handler().ServeHTTP(w, r)
	resp := w.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestAuthorization: who may see and do what.
func TestAuthorization(t *testing.T) {
	type who int
	const (
		nobody who = iota
		user       // alice, SSO, not an operator
		operatorGroup
		operatorListed // ops@corp.example, in console.admins
	)
	tests := []struct {
		name     string
		who      who
		method   string
		path     string
		form     url.Values
		csrf     bool // add the session's CSRF token to the form
		headers  map[string]string
		status   int
		location string // for redirects: prefix
		body     string // substring
	}{
		{"no session: overview", nobody, "GET", "/ops", nil, false, nil, http.StatusSeeOther, "/login?next=%2Fops", ""},
		{"no session: devices", nobody, "GET", "/me", nil, false, nil, http.StatusSeeOther, "/login?next=%2Fme", ""},
		{"no session: root", nobody, "GET", "/", nil, false, nil, http.StatusSeeOther, "/login", ""},
		{"no session: live json", nobody, "GET", "/ops/live.json", nil, false, nil, http.StatusUnauthorized, "", "not signed in"},
		{"no session: post", nobody, "POST", "/ops/kick", url.Values{"session": {"s-aaaa"}}, false, nil, http.StatusForbidden, "", "not signed in"},
		{"login page", nobody, "GET", "/login", nil, false, nil, http.StatusOK, "", "admin client certificate"},
		{"static", nobody, "GET", "/static/console.js", nil, false, nil, http.StatusOK, "", "live.json"},
		{"unknown page", user, "GET", "/nope", nil, false, nil, http.StatusNotFound, "", "no such page"},
		{"user: overview refused", user, "GET", "/ops", nil, false, nil, http.StatusForbidden, "", "for the gateway&#39;s operators"},
		{"user: sessions refused", user, "GET", "/ops/sessions", nil, false, nil, http.StatusForbidden, "", "operators"},
		{"user: leases refused", user, "GET", "/ops/leases", nil, false, nil, http.StatusForbidden, "", "operators"},
		{"user: events refused", user, "GET", "/ops/events", nil, false, nil, http.StatusForbidden, "", "operators"},
		{"user: live refused", user, "GET", "/ops/live.json", nil, false, nil, http.StatusForbidden, "", "operators only"},
		{"user: kick refused", user, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, true, nil, http.StatusForbidden, "", "operators"},
		{"user: token refused", user, "POST", "/ops/token", url.Values{"identity": {"alice@corp.example"}}, true, nil, http.StatusForbidden, "", "operators"},
		{"user: root goes to devices", user, "GET", "/", nil, false, nil, http.StatusSeeOther, "/me", ""},
		{"user: devices", user, "GET", "/me", nil, false, nil, http.StatusOK, "", "1002"},
		{"user: revoking another's serial", user, "POST", "/me/revoke", url.Values{"serial": {"2001"}}, true, nil, http.StatusForbidden, "", "only revoke your own"},
		{"user: confirming another's serial", user, "GET", "/me/revoke?serial=2001", nil, false, nil, http.StatusNotFound, "", "no certificate"},
		{"user: revoking an unknown serial", user, "POST", "/me/revoke", url.Values{"serial": {"9999"}}, true, nil, http.StatusForbidden, "", "only revoke your own"},
		{"user: revoking own without csrf", user, "POST", "/me/revoke", url.Values{"serial": {"1002"}}, false, nil, http.StatusForbidden, "", "stale"},
		{"user: confirm own", user, "GET", "/me/revoke?serial=1002", nil, false, nil, http.StatusOK, "", "confirm-revoke"},
		{"group operator: overview", operatorGroup, "GET", "/ops", nil, false, nil, http.StatusOK, "", "stat-sessions"},
		{"listed operator: sessions", operatorListed, "GET", "/ops/sessions", nil, false, nil, http.StatusOK, "", "s-aaaa"},
		{"operator: root goes to overview", operatorListed, "GET", "/", nil, false, nil, http.StatusSeeOther, "/ops", ""},
		{"operator: leases", operatorListed, "GET", "/ops/leases", nil, false, nil, http.StatusOK, "", "100.64.0.2"},
		{"operator: events", operatorListed, "GET", "/ops/events?kind=granted", nil, false, nil, http.StatusOK, "", "s-bbbb"},
		{"operator: kick confirm", operatorListed, "GET", "/ops/kick?session=s-bbbb", nil, false, nil, http.StatusOK, "", "confirm-kick"},
		{"operator: kick confirm of a gone session", operatorListed, "GET", "/ops/kick?session=s-zzzz", nil, false, nil, http.StatusNotFound, "", "No live session"},
		{"operator: kick without csrf", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, false, nil, http.StatusForbidden, "", "stale"},
		{"operator: kick with a wrong csrf", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}, "csrf": {"x"}}, false, nil, http.StatusForbidden, "", "stale"},
		{"operator: kick from another origin", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, true,
			map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden, "", "stale"},
		{"operator: kick from another port", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, true,
			map[string]string{"Origin": "https://gw.corp.example:9443"}, http.StatusForbidden, "", "stale"},
		{"operator: kick without origin or fetch metadata", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, true,
			map[string]string{"Origin": ""}, http.StatusForbidden, "", "stale"},
		{"operator: null origin from another site", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, true,
			map[string]string{"Origin": "null", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden, "", "stale"},
		{"operator: null origin, same-origin fetch", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, true,
			map[string]string{"Origin": "null", "Sec-Fetch-Site": "same-origin"}, http.StatusOK, "", "was closed"},
		{"operator: kick", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-bbbb"}}, true, nil, http.StatusOK, "", "Session s-bbbb of bob@corp.example was closed"},
		{"operator: kick of a gone session", operatorListed, "POST", "/ops/kick", url.Values{"session": {"s-zzzz"}}, true, nil, http.StatusNotFound, "", "no session"},
		{"operator: revoke confirm", operatorListed, "GET", "/ops/revoke?identity=bob@corp.example", nil, false, nil, http.StatusOK, "", "2001"},
		{"operator: revoke a serial-looking identity", operatorListed, "GET", "/ops/revoke?identity=1234", nil, false, nil, http.StatusBadRequest, "", "not an identity"},
		{"operator: token confirm", operatorListed, "GET", "/ops/token?identity=dave@corp.example&ttl=30m", nil, false, nil, http.StatusOK, "", "valid for 30m0s"},
		{"operator: token bad ttl", operatorListed, "GET", "/ops/token?identity=dave@corp.example&ttl=1y", nil, false, nil, http.StatusBadRequest, "", "lifetime"},
		{"operator: token", operatorListed, "POST", "/ops/token", url.Values{"identity": {"dave@corp.example"}, "ttl": {"30m"}}, true, nil, http.StatusOK, "", "tok-dave@corp.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			var ss *session
			switch tt.who {
			case user:
				s := h.signIn("alice@corp.example", false)
				ss = &s
			case operatorGroup:
				s := h.signIn("grace@corp.example", true)
				ss = &s
			case operatorListed:
				s := h.signIn("ops@corp.example", false)
				ss = &s
			}
			form := tt.form
			if tt.csrf {
				form.Set("csrf", ss.csrf)
			}
			resp, body := h.do(request(tt.method, tt.path, ss, form, tt.headers))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body:\n%.600s", resp.StatusCode, tt.status, body)
			}
			if tt.location != "" && !strings.HasPrefix(resp.Header.Get("Location"), tt.location) {
				t.Errorf("Location %q, want %q…", resp.Header.Get("Location"), tt.location)
			}
			if !strings.Contains(strings.ToLower(body), strings.ToLower(tt.body)) {
				t.Errorf("body lacks %q:\n%.800s", tt.body, body)
			}
			forged := resp.StatusCode == http.StatusForbidden && strings.Contains(body, "stale")
			if got := h.metrics.get("refused forged_form"); (got == 1) != forged {
				t.Errorf("forged_form counted %d times", got)
			}
			kicked, revoked, tokens := h.b.actions()
			wantActions := resp.StatusCode == http.StatusOK && tt.method == http.MethodPost
			if got := len(kicked) + len(revoked) + len(tokens); (got > 0) != wantActions {
				t.Errorf("backend actions %v %v %v, want some: %v", kicked, revoked, tokens, wantActions)
			}
		})
	}
}

// TestSelfRevoke: a user revokes the certificate of a lost laptop; its session closes; the
// action is logged with who did it.
func TestSelfRevoke(t *testing.T) {
	h := newHarness(t)
	ss := h.signIn("alice@corp.example", false)
	// The laptop's device: 1003, a renewal of 1002, which still carries its session.
	_, body := h.do(request("GET", "/me", &ss, nil, nil))
	for _, want := range []string{`<tr data-serial="1003">`, "renewed 1×", "connected now", "<code>1002</code>", `<tr data-serial="1001">`} {
		if !strings.Contains(body, want) {
			t.Errorf("devices page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, `<tr data-serial="1002">`) {
		t.Error("the renewed certificate is shown as a device of its own")
	}
	resp, body := h.do(request("POST", "/me/revoke", &ss, url.Values{"serial": {"1003"}, "csrf": {ss.csrf}}, nil))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "1 session(s) closed") || !strings.Contains(body, "2 certificate(s) of the device") {
		t.Fatalf("status %d:\n%s", resp.StatusCode, body)
	}
	if _, revoked, _ := h.b.actions(); strings.Join(revoked, ",") != "1003,1002" {
		t.Fatalf("revoked %v, want [1003 1002]: the device's certificates, 1001 (another device) kept", revoked)
	}
	lines := h.log.Find(t, "console: own device revoked", map[string]any{"identity": "alice@corp.example", "method": "sso", "serial": "1003",
		"sessions_closed": 1.0})
	if got := fmt.Sprint(lines[0]["serials"]); got != "[1003 1002]" {
		t.Errorf("logged serials %s", got)
	}
	if _, body := h.do(request("GET", "/me", &ss, nil, nil)); !strings.Contains(body, "revoked 2025-06-01 12:00:00 UTC") {
		t.Errorf("devices page after the revocation:\n%s", body)
	}
	// Revoked already: nothing left to revoke.
	if resp, _ := h.do(request("GET", "/me/revoke?serial=1002", &ss, nil, nil)); resp.StatusCode != http.StatusConflict {
		t.Errorf("confirming a revoked device: status %d", resp.StatusCode)
	}
	// Bob's revocation attempt of alice's serial is refused and logged.
	bob := h.signIn("bob@corp.example", false)
	if resp, _ := h.do(request("POST", "/me/revoke", &bob, url.Values{"serial": {"1001"}, "csrf": {bob.csrf}}, nil)); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob revoking alice's certificate: status %d", resp.StatusCode)
	}
	h.log.Find(t, "console: revocation refused", map[string]any{"identity": "bob@corp.example", "serial": "1001", "target": "alice@corp.example"})
}

// TestChains: certificates grouped into devices by their renewal links.
func TestChains(t *testing.T) {
	c := func(serial, renewalOf string) certs.Certificate {
		return certs.Certificate{Serial: serial, RenewalOf: renewalOf}
	}
	tests := []struct {
		name string
		in   []certs.Certificate // newest first
		want string              // devices separated by |, each chain newest first
	}{
		{"none", nil, ""},
		{"one each", []certs.Certificate{c("2", ""), c("1", "")}, "2|1"},
		{"renewals", []certs.Certificate{c("4", "3"), c("3", "1"), c("2", ""), c("1", "")}, "4,3,1|2"},
		{"a renewal of an unknown serial", []certs.Certificate{c("5", "99")}, "5"},
		{"a loop of links", []certs.Certificate{c("7", "8"), c("8", "7"), c("6", "")}, "6"},
	}
	for _, tt := range tests {
		var got []string
		for _, ch := range chains(tt.in) {
			var ss []string
			for _, x := range ch {
				ss = append(ss, x.Serial)
			}
			got = append(got, strings.Join(ss, ","))
		}
		if strings.Join(got, "|") != tt.want {
			t.Errorf("%s: chains %v, want %s", tt.name, got, tt.want)
		}
	}
}

// TestHeaders: every answer carries the security headers; pages are not cached; the
// session cookie is __Host-, Secure, HttpOnly and SameSite=Lax.
func TestHeaders(t *testing.T) {
	h := newHarness(t)
	ss := h.signIn("ops@corp.example", false)
	for _, tt := range []struct {
		path, cache string
		ss          *session
	}{
		{"/login", "no-store", nil},
		{"/ops", "no-store", &ss},
		{"/ops/live.json", "no-store", &ss},
		{"/me/config", "no-store", &ss},
		{"/nope", "no-store", nil},
		{"/static/console.css", "max-age=300", nil},
	} {
		resp, _ := h.do(request("GET", tt.path, tt.ss, nil, nil))
		want := map[string]string{
			"Content-Security-Policy":   contentSecurityPolicy,
			"X-Content-Type-Options":    "nosniff",
			"X-Frame-Options":           "DENY",
			"Referrer-Policy":           "no-referrer",
			"Strict-Transport-Security": "max-age=31536000",
			"Cache-Control":             tt.cache,
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", tt.path, k, got, v)
			}
		}
	}
	for _, d := range []string{"script-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "default-src 'none'"} {
		if !strings.Contains(contentSecurityPolicy, d) {
			t.Errorf("CSP lacks %s", d)
		}
	}
	if strings.Contains(contentSecurityPolicy, "unsafe-inline") {
		t.Error("CSP allows inline code")
	}
	// A certificate sign-in sets the session cookie.
	r := request("GET", "/ops", nil, nil, nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{certFor("ops@corp.example")}}
	resp, _ := h.do(r)
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == sessionCookie {
			c = k
		}
	}
	if c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" || len(c.Value) < 43 {
		t.Fatalf("session cookie %+v", c)
	}
	// The pages have no inline script.
	_, body := h.do(request("GET", "/ops/sessions", &ss, nil, nil))
	if strings.Contains(body, "<script>") || strings.Contains(body, " onclick=") {
		t.Error("a page has inline script")
	}
}

func certFor(cn string) *x509.Certificate {
	c := &x509.Certificate{}
	c.Subject.CommonName = cn
	return c
}

// TestCertificateOperators: an operator's client certificate signs in by itself; a
// certificate that is refused or not an operator's does not; a certificate session holds
// only with the same certificate.
func TestCertificateOperators(t *testing.T) {
	tests := []struct {
		name   string
		cn     string // "" : none
		status int
	}{
		{"operator certificate", "ops@corp.example", http.StatusOK},
		{"user certificate", "carol@corp.example", http.StatusSeeOther},
		{"refused certificate", "mallory@corp.example", http.StatusSeeOther},
		{"no certificate", "", http.StatusSeeOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			r := request("GET", "/ops", nil, nil, nil)
			if tt.cn != "" {
				r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{certFor(tt.cn)}}
			}
			resp, _ := h.do(r)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if n := h.s.store.counts(); (n == 1) != (tt.status == http.StatusOK) {
				t.Errorf("%d sessions", n)
			}
		})
	}
	h := newHarness(t)
	r := request("GET", "/ops", nil, nil, nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{certFor("ops@corp.example")}}
	resp, _ := h.do(r)
	h.log.Find(t, "console: signed in", map[string]any{"identity": "ops@corp.example", "method": "certificate"})
	if n := h.metrics.get("sign-in certificate ok"); n != 1 {
		t.Errorf("certificate sign-ins counted %d", n)
	}
	cookie := resp.Cookies()[0]
	// The same cookie without the certificate: the session is void.
	r = request("GET", "/ops", nil, nil, nil)
	r.AddCookie(cookie)
	if resp, _ := h.do(r); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("certificate session without its certificate: status %d", resp.StatusCode)
	}
	if n := h.s.store.counts(); n != 0 {
		t.Fatalf("%d sessions after the certificate went", n)
	}
	// An operator removed from console.admins (a reload) is one no more.
	ss := h.signIn("ops@corp.example", false)
	h.s.SetAdmins(nil)
	if resp, _ := h.do(request("GET", "/ops", &ss, nil, nil)); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("after the reload: status %d, want 403", resp.StatusCode)
	}
}

// TestSessionExpiry: a session ends after idleTimeout without requests and after lifetime
// in any case (injected clock).
func TestSessionExpiry(t *testing.T) {
	tests := []struct {
		name  string
		steps []time.Duration // requests after each of these waits
		last  int             // the status of the last request
	}{
		{"fresh", []time.Duration{0}, http.StatusOK},
		{"used within the idle timeout", []time.Duration{idleTimeout - time.Second}, http.StatusOK},
		{"idle too long", []time.Duration{idleTimeout}, http.StatusSeeOther},
		{"kept alive by use", []time.Duration{20 * time.Minute, 20 * time.Minute, 20 * time.Minute}, http.StatusOK},
		{"past its lifetime although in use", repeat(20*time.Minute, int(lifetime/(20*time.Minute))), http.StatusSeeOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ss := h.signIn("alice@corp.example", false)
			var status int
			for _, d := range tt.steps {
				h.clk.Advance(d)
				resp, _ := h.do(request("GET", "/me", &ss, nil, nil))
				status = resp.StatusCode
			}
			if status != tt.last {
				t.Fatalf("last status %d, want %d", status, tt.last)
			}
			if n := h.s.store.counts(); (n == 1) != (tt.last == http.StatusOK) {
				t.Errorf("%d sessions kept", n)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

// TestStoreBounds: sessions beyond maxSessions push out the least recently used; a sign-in
// in progress finishes only with its own sealed cookie and state, within pendingTimeout.
func TestStoreBounds(t *testing.T) {
	clk := testclock.New(time.Now())
	st := newStore(clk.Now)
	first := st.create("a@x.example", MethodSSO, false)
	clk.Advance(time.Second)
	second := st.create("b@x.example", MethodSSO, false)
	clk.Advance(time.Second)
	if _, err := st.get(first.id); err != nil { // first is now the more recently used
		t.Fatal(err)
	}
	for range maxSessions - 1 {
		st.create("c@x.example", MethodSSO, false)
	}
	if n := st.counts(); n != maxSessions {
		t.Fatalf("%d sessions, want %d", n, maxSessions)
	}
	if _, err := st.get(second.id); !errors.Is(err, errNoSession) {
		t.Errorf("the least recently used session survived: %v", err)
	}
	if _, err := st.get(first.id); err != nil {
		t.Errorf("a recently used session went: %v", err)
	}
	// Sign-ins in progress live in their cookies: a thousand started do not push out the
	// first.
	p := st.begin("/ops")
	for range 1000 {
		clk.Advance(time.Millisecond)
		st.begin("/")
	}
	if got, ok := st.finish(p.state, p.cookie); !ok || got.next != "/ops" || got.nonce != p.nonce || got.verifier != p.verifier {
		t.Errorf("the first sign-in after a thousand others: %+v %v", got, ok)
	}
	q := st.begin("/me")
	other := st.begin("/me")
	for name, c := range map[string]string{
		"no cookie": "", "another sign-in's cookie": other.cookie, "the state as cookie": q.state,
		"a tampered cookie": q.cookie[:len(q.cookie)-2] + "AA", "garbage": "!!!",
	} {
		if _, ok := st.finish(q.state, c); ok {
			t.Errorf("a sign-in finished with %s", name)
		}
	}
	if _, ok := st.finish("", q.cookie); ok {
		t.Error("a sign-in finished without state")
	}
	if got, ok := st.finish(q.state, q.cookie); !ok || got.next != "/me" {
		t.Errorf("finish = %+v %v", got, ok)
	}
	if _, ok := newStore(clk.Now).finish(q.state, q.cookie); ok {
		t.Error("a login cookie opened with another store's key")
	}
	r := st.begin("/")
	clk.Advance(pendingTimeout)
	if _, ok := st.finish(r.state, r.cookie); ok {
		t.Error("an expired sign-in finished")
	}
}

// TestClientConfig: the download is dstm-client.yaml with exactly gateway, fingerprint and
// sso.
func TestClientConfig(t *testing.T) {
	h := newHarness(t)
	ss := h.signIn("alice@corp.example", false)
	resp, body := h.do(request("GET", "/me/config", &ss, nil, nil))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Disposition") != `attachment; filename="dstm-client.yaml"` {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m["gateway"] != "gw.corp.example:3653" || m["fingerprint"] != "ab12cd" || m["sso"] != true {
		t.Fatalf("dstm-client.yaml = %v:\n%s", m, body)
	}
}

// TestSampler: throughput from byte counters over at least minSampleGap.
func TestSampler(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSampler(func() time.Time { return t0 })
	at := func(sec float64, in, out uint64) map[string]rate {
		return s.observe(t0.Add(time.Duration(sec*float64(time.Second))), []admin.Session{{ID: "a", BytesIn: in, BytesOut: out}})
	}
	tests := []struct {
		name      string
		sec       float64
		in, out   uint64
		wantIn    float64
		wantOut   float64
		wantReuse bool
	}{
		{"first sample", 0, 1000, 0, 0, 0, false},
		{"two seconds later", 2, 3000, 4000, 1000, 2000, false},
		{"too soon: the last rates", 2.5, 9000, 9000, 1000, 2000, true},
		{"counter reset", 4, 10, 10, 0, 0, false},
	}
	for _, tt := range tests {
		got := at(tt.sec, tt.in, tt.out)["a"]
		if got.In != tt.wantIn || got.Out != tt.wantOut {
			t.Errorf("%s: rate %+v, want in %v out %v", tt.name, got, tt.wantIn, tt.wantOut)
		}
	}
	if formatRate(1000) != "8.0 kbit/s" || formatBytes(1234567) != "1.2 MB" || formatBytes(999) != "999 B" {
		t.Errorf("formats: %s %s %s", formatRate(1000), formatBytes(1234567), formatBytes(999))
	}
}

// TestLocalPath: a sign-in returns only to the console's own pages.
func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/ops/sessions": "/ops/sessions", "": "/", "https://evil.example/": "/", "//evil.example": "/",
		"/\\evil.example": "/", "ops": "/", "/me\r\nSet-Cookie: x": "/",
		"/\t/evil.example": "/", "/%09/evil.example": "/%09/evil.example", "/ops\\..\\x": "/", "/\x7f/x": "/",
		"/me?tab=devices": "/me?tab=devices",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}
