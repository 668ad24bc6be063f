package gateway_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/certs/certstest"
	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/sso"
)

// consoleClient is an HTTPS client of the console presenting st's certificate (nil: none),
// with a cookie jar of its own.
func consoleClient(t *testing.T, st, roots *enroll.State) *http.Client {
	t.Helper()
	cfg := roots.ClientTLSConfig("localhost", "http/1.1")
	cfg.Certificates = nil
	if st != nil {
		cfg = st.ClientTLSConfig("localhost", "http/1.1")
	}
	jar := &cookieJar{}
	return &http.Client{Timeout: waitTimeout, Jar: jar, Transport: &http.Transport{TLSClientConfig: cfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// cookieJar keeps every cookie (the console's are for https://localhost:PORT).
type cookieJar struct{ cs []*http.Cookie }

func (j *cookieJar) SetCookies(_ *url.URL, cs []*http.Cookie) { j.cs = append(j.cs, cs...) }
func (j *cookieJar) Cookies(*url.URL) []*http.Cookie          { return j.cs }

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestConsoleServed: a gateway with a console serves it over TLS with its CA's certificate;
// an operator's client certificate signs in; the events page shows the session established
// and kicked (with its certificate), a failed handshake and a revocation; a reload changes
// the operators at once and names the rest of the section as needing a restart.
func TestConsoleServed(t *testing.T) {
	var consoleURL string
	gw := startGateway(t, func(c *config.Config) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		consoleURL = "https://localhost:" + strings.Split(addr, ":")[1]
		c.Console = &config.Console{Listen: addr, URL: consoleURL, Admins: []string{"ops@example.com"}}
	})
	ctx := testCtx(t)
	ops := gw.enrollIdentity(t, "ops@example.com")
	eve := gw.enrollIdentity(t, "eve@example.com")
	tun := openTLSTunnel(t, gw, eve)

	// Without a certificate: sent to the sign-in page, which says certificates are needed.
	anon := consoleClient(t, nil, ops)
	if resp, _ := get(t, anon, consoleURL+"/ops"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("anonymous /ops: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A user's certificate is no operator's.
	if resp, _ := get(t, consoleClient(t, eve, ops), consoleURL+"/ops"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("eve's certificate on /ops: %d", resp.StatusCode)
	}
	opc := consoleClient(t, ops, ops)
	resp, body := get(t, opc, consoleURL+"/ops/sessions")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "eve@example.com") || !strings.Contains(body, tun.lease.String()) {
		t.Fatalf("operator's sessions page: %d\n%.2000s", resp.StatusCode, body)
	}
	m := regexp.MustCompile(`data-session="(s-[0-9a-f]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no session row")
	}
	// A TLS handshake with a certificate of another CA fails: a failed handshake.
	bad := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"tsp/2"}, Certificates: []tls.Certificate{certstest.New(t).IssueClient(t, "mallory@example.com")}}
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", gw.tcp, bad); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	if err := gw.admin.Kick(ctx, m[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.admin.Revoke(ctx, "eve@example.com"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the events on the console", func() (bool, error) {
		_, body := get(t, opc, consoleURL+"/ops/events")
		for _, want := range []string{
			`<td>granted</td><td>eve@example.com</td><td>` + m[1],
			`<td>ended</td><td>eve@example.com</td><td>` + m[1] + `</td><td>` + tun.lease.String() + `</td><td class="serial">` + eve.Leaf.SerialNumber.String(),
			`<td>handshake-failed</td>`,
			`<td>revoked</td><td>eve@example.com</td><td></td><td></td><td class="serial">` + eve.Leaf.SerialNumber.String(),
		} {
			if !strings.Contains(body, want) {
				return false, nil
			}
		}
		return strings.Contains(body, "kicked"), nil
	})

	// A reload: ops is an operator no more, at once; a new URL needs a restart.
	next := gw.cfg
	c := *gw.cfg.Console
	c.Admins = []string{"someone@example.com"}
	c.URL = "https://gw.example.com"
	next.Console = &c
	restart, err := gw.g.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(restart, []string{"console"}) {
		t.Errorf("restart needed %v, want [console]", restart)
	}
	if resp, _ := get(t, opc, consoleURL+"/ops"); resp.StatusCode == http.StatusOK {
		t.Error("ops is still an operator after the reload")
	}
}

// TestConsoleSecretFile: with sso, the console's client secret is read before anything
// starts; a missing or empty file stops the start with an error naming the field.
func TestConsoleSecretFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{empty, "the first line is empty"},
	} {
		cfg := config.Default()
		cfg.StateDir = t.TempDir()
		cfg.SSO = &sso.Config{Issuer: "https://idp.example.com/", ClientID: "dstm-client"}
		cfg.Console = &config.Console{Listen: "127.0.0.1:0", URL: "https://localhost", ClientID: "dstm-console", ClientSecretFile: tt.path}
		g, err := gateway.New(cfg, zerolog.Nop(), gateway.Options{})
		if err == nil {
			g.Close()
			t.Fatalf("%s: the gateway opened", tt.path)
		}
		if !strings.Contains(err.Error(), "console.client_secret_file: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q", tt.path, err)
		}
	}
}
