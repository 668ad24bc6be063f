package console

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/internal/logging/logtest"
	"github.com/dstmgw/dstm/internal/oidctest"
	"github.com/dstmgw/dstm/internal/testclock"
	"github.com/dstmgw/dstm/sso"
)

// startProvider runs the real OpenID provider with the console's confidential client.
func startProvider(t *testing.T, redirect string) *oidctest.Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := oidctest.Start(ln, "127.0.0.1",
		[]oidctest.Client{{ID: "dstm-client"}, {ID: "dstm-console", Secret: "console-secret", RedirectURIs: []string{redirect}}},
		[]oidctest.User{
			{Email: "grace@corp.example", Password: "pw", Groups: []string{"vpn", "vpn-admins"}},
			{Email: "alice@corp.example", Password: "pw", Groups: []string{"vpn"}},
			{Email: "ops@corp.example", Password: "pw", Groups: []string{"vpn"}},
			{Email: "eve@corp.example", Password: "pw", Groups: []string{"contractors"}},
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// ssoHarness is a console with sign-in at a real provider (and the fake gateway).
func ssoHarness(t *testing.T, p *oidctest.Provider) *harness {
	t.Helper()
	clk := testclock.New(time.Now())
	v, err := sso.New(sso.Config{Issuer: p.Issuer, ClientID: "dstm-client", AllowedGroups: []string{"vpn"}, AdminGroups: []string{"vpn-admins"}},
		sso.Options{HTTPClient: p.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	sink := &logtest.Sink{}
	cm := &countMetrics{n: map[string]int{}}
	s, err := New(Config{URL: testURL, Metrics: cm, ClientID: "dstm-console", ClientSecret: "console-secret", Admins: []string{"ops@corp.example"},
		SSO: v, Backend: newFakeBackend(clk.Now), Gateway: "gw.corp.example:3653", Fingerprint: "ab", Logger: zerolog.New(sink), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{s: s, b: s.cfg.Backend.(*fakeBackend), clk: clk, log: sink, metrics: cm}
}

// startSignIn asks the console for a sign-in: the provider's URL and the login cookie.
func (h *harness) startSignIn(t *testing.T) (string, *http.Cookie) {
	t.Helper()
	resp, body := h.do(request("GET", "/auth/login?next=/ops/leases", nil, nil, nil))
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("/auth/login: status %d: %s", resp.StatusCode, body)
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == loginCookie {
			c = k
		}
	}
	if c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Fatalf("login cookie %+v", c)
	}
	loc := resp.Header.Get("Location")
	u, _ := url.Parse(loc)
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" || q.Get("state") == c.Value || q.Get("redirect_uri") != testURL+callbackPath {
		t.Fatalf("authorization request %s", loc)
	}
	return loc, c
}

func (h *harness) callbackWith(cb *url.URL, c *http.Cookie) (*http.Response, string) {
	r := request("GET", cb.RequestURI(), nil, nil, nil)
	if c != nil {
		r.AddCookie(c)
	}
	return h.do(r)
}

// TestSignIn: the authorization code flow with PKCE, state and nonce against the real
// provider: operators by group or by console.admins, users, users the sso section does not
// admit; a replayed callback, one without its cookie, and a code from another sign-in are
// refused, with nothing created.
func TestSignIn(t *testing.T) {
	p := startProvider(t, testURL+callbackPath)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		email    string
		status   int
		location string
		opsPage  int
	}{
		{"grace@corp.example", http.StatusSeeOther, "/ops/leases", http.StatusOK},
		{"ops@corp.example", http.StatusSeeOther, "/ops/leases", http.StatusOK},
		{"alice@corp.example", http.StatusSeeOther, "/ops/leases", http.StatusForbidden},
		{"eve@corp.example", http.StatusForbidden, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.email, func(t *testing.T) {
			h := ssoHarness(t, p)
			authURL, c := h.startSignIn(t)
			cb, err := p.LoginCode(ctx, authURL, testURL+callbackPath, tt.email, "pw")
			if err != nil {
				t.Fatal(err)
			}
			resp, body := h.callbackWith(cb, c)
			if resp.StatusCode != tt.status || resp.Header.Get("Location") != tt.location {
				t.Fatalf("callback: status %d location %q, want %d %q:\n%.500s", resp.StatusCode, resp.Header.Get("Location"), tt.status, tt.location, body)
			}
			if tt.status != http.StatusSeeOther {
				h.log.Find(t, "console: sign-in refused", map[string]any{"reason": "not allowed"})
				if n := h.metrics.get("sign-in sso refused"); n != 1 {
					t.Errorf("refused sign-ins counted %d", n)
				}
				if n := h.s.store.counts(); n != 0 {
					t.Fatalf("%d sessions after a refused sign-in", n)
				}
				return
			}
			h.log.Find(t, "console: signed in", map[string]any{"identity": tt.email, "method": "sso"})
			if n := h.metrics.get("sign-in sso ok"); n != 1 {
				t.Errorf("sign-ins counted %d", n)
			}
			var sc *http.Cookie
			for _, k := range resp.Cookies() {
				if k.Name == sessionCookie {
					sc = k
				}
			}
			r := request("GET", "/ops", nil, nil, nil)
			r.AddCookie(sc)
			if resp, _ := h.do(r); resp.StatusCode != tt.opsPage {
				t.Fatalf("/ops: status %d, want %d", resp.StatusCode, tt.opsPage)
			}
			// The same callback again, cookie and all: the provider's code was used.
			before := h.s.store.counts()
			if resp, _ := h.callbackWith(cb, c); resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("replayed callback: status %d", resp.StatusCode)
			}
			if n := h.s.store.counts(); n != before {
				t.Fatalf("a replayed callback made a session (%d, was %d)", n, before)
			}
			// Signing in again in the same browser replaces its session.
			authURL, c = h.startSignIn(t)
			if cb, err = p.LoginCode(ctx, authURL, testURL+callbackPath, tt.email, "pw"); err != nil {
				t.Fatal(err)
			}
			r = request("GET", cb.RequestURI(), nil, nil, nil)
			r.AddCookie(c)
			r.AddCookie(sc)
			if resp, _ := h.do(r); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("second sign-in: status %d", resp.StatusCode)
			}
			if n := h.s.store.counts(); n != 1 {
				t.Errorf("%d sessions after signing in twice in one browser, want 1", n)
			}
		})
	}

	t.Run("without the login cookie", func(t *testing.T) {
		h := ssoHarness(t, p)
		authURL, _ := h.startSignIn(t)
		cb, err := p.LoginCode(ctx, authURL, testURL+callbackPath, "alice@corp.example", "pw")
		if err != nil {
			t.Fatal(err)
		}
		if resp, body := h.callbackWith(cb, nil); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "another browser") {
			t.Fatalf("status %d: %.300s", resp.StatusCode, body)
		}
		h.log.Find(t, "console: sign-in refused", map[string]any{"reason": "bad or expired state"})
	})
	t.Run("a code of another sign-in", func(t *testing.T) {
		h := ssoHarness(t, p)
		authA, _ := h.startSignIn(t)
		authB, cookieB := h.startSignIn(t)
		ub, _ := url.Parse(authB)
		cbA, err := p.LoginCode(ctx, authA, testURL+callbackPath, "alice@corp.example", "pw")
		if err != nil {
			t.Fatal(err)
		}
		// A's code with B's state and cookie: B's PKCE verifier does not fit A's challenge.
		q := cbA.Query()
		q.Set("state", ub.Query().Get("state"))
		cbA.RawQuery = q.Encode()
		if resp, body := h.callbackWith(cbA, cookieB); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d: %.300s", resp.StatusCode, body)
		}
		h.log.Find(t, "console: sign-in refused", map[string]any{"reason": "code exchange failed"})
		if n := h.s.store.counts(); n != 0 {
			t.Fatalf("%d sessions", n)
		}
	})
}
