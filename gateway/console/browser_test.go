package console_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/client"
	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/internal/browsertest"
	"github.com/dstmgw/dstm/internal/oidctest"
	"github.com/dstmgw/dstm/sso"
)

// waitTimeout bounds every wait of the browser test.
const waitTimeout = 20 * time.Second

// world is a real gateway in process (in-memory TUN device) with its console and single
// sign-on at a real provider, and one laptop (the rootless client) of alice's.
type world struct {
	t          *testing.T
	provider   *oidctest.Provider
	gw         *gateway.Gateway
	admin      *admin.Client
	consoleURL string
	tsp        string // the TSP port, [::1]:PORT
	trust      [][]byte
}

// freePort returns a loopback address with a port free a moment ago (the console's URL must
// name its port before the gateway binds it).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newWorld(t *testing.T) *world {
	t.Helper()
	consoleAddr := freePort(t)
	_, port, _ := net.SplitHostPort(consoleAddr)
	w := &world{t: t, consoleURL: "https://localhost:" + port}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.provider, err = oidctest.Start(ln, "127.0.0.1",
		[]oidctest.Client{{ID: "dstm-client"}, {ID: "dstm-console", Secret: "console-secret", RedirectURIs: []string{w.consoleURL + "/auth/callback"}}},
		[]oidctest.User{
			{Email: "grace@corp.example", Password: "grace-pw", Groups: []string{"vpn", "vpn-admins"}},
			{Email: "alice@corp.example", Password: "alice-pw", Groups: []string{"vpn"}},
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.provider.Close() })

	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "dstmcons")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	for name, b := range map[string][]byte{"idp.pem": w.provider.CAPEM, "console.secret": []byte("console-secret\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Admin.Socket = filepath.Join(sockDir, "admin.sock")
	// DSTM clients speak IPv6; no keepalive traffic: the byte counters stay put while a page
	// is read.
	cfg.Listen.Addresses = []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}
	cfg.TEP.Keepalive = 0
	cfg.SSO = &sso.Config{Issuer: w.provider.Issuer, ClientID: "dstm-client", CAFile: filepath.Join(dir, "idp.pem"),
		AllowedGroups: []string{"vpn"}, AdminGroups: []string{"vpn-admins"}}
	cfg.Console = &config.Console{Listen: consoleAddr, URL: w.consoleURL, ClientID: "dstm-console",
		ClientSecretFile: filepath.Join(dir, "console.secret")}
	ca, err := certs.Init(filepath.Join(cfg.StateDir, gateway.CADir), gateway.CAOptions(cfg, zerolog.Nop(), time.Now))
	if err != nil {
		t.Fatal(err)
	}
	ca.Close()
	tt := tuntest.NewChannelTUN()
	w.gw, err = gateway.New(cfg, zerolog.Nop(), gateway.Options{Version: "browser-test", Device: tt.TUN()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.gw.Run(ctx) }()
	go func() { // the gateway's TUN writes: nobody reads them here
		for {
			select {
			case <-ctx.Done():
				return
			case <-tt.Inbound:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("the gateway did not stop")
		}
		w.gw.Close()
	})
	select {
	case <-w.gw.Ready():
	case err := <-done:
		t.Fatalf("gateway: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("gateway not ready")
	}
	tcps, _ := w.gw.ListenAddrs()
	w.tsp = tcps[0].String()
	w.admin = admin.NewClient(cfg.Admin.Socket)
	t.Cleanup(func() { w.admin.Close() })
	waitFor(t, "the admin socket", func() error { _, err := w.admin.Status(context.Background()); return err })
	// The browser trusts the provider's certificate and the chain the console presents.
	w.trust = [][]byte{w.provider.CAPEM}
	c, err := tls.Dial("tcp", consoleAddr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range c.ConnectionState().PeerCertificates {
		w.trust = append(w.trust, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pc.Raw}))
	}
	c.Close()
	return w
}

// laptop enrolls a device of identity (a token from the admin API) and keeps its tunnel up
// with the real client in rootless mode; states receives every state change.
func (w *world) laptop(identity, socks string) (*enroll.State, <-chan client.Status) {
	t := w.t
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tok, err := w.admin.Token(ctx, identity, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "laptop")
	st, err := enroll.Enroll(ctx, enroll.Options{Gateway: w.tsp, ServerName: "localhost", Token: tok.Token, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan client.Status, 64)
	c, err := client.New(client.Config{
		Gateway: w.tsp, ServerName: "localhost", StateDir: dir, Proxy: []string{"socks5://" + socks},
		BackoffMin: 200 * time.Millisecond, Logger: zerolog.Nop(),
		OnState: func(s client.Status) {
			select {
			case states <- s:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_ = c.Run(rctx)
	}()
	t.Cleanup(func() {
		stop()
		<-ended
	})
	return st, states
}

// waitState waits for the client to report state (other states in between are skipped).
func waitState(t *testing.T, states <-chan client.Status, state string, within time.Duration) client.Status {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case s := <-states:
			if s.State == state {
				return s
			}
		case <-deadline:
			t.Fatalf("the client did not report %q within %v", state, within)
		}
	}
}

func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		<-tick.C
	}
}

// signIn goes through the provider's sign-in page in the browser and waits for sel.
func signIn(t *testing.T, ctx context.Context, start, email, password string, sel chromedp.ID) {
	t.Helper()
	if err := chromedp.Do(ctx,
		browsertest.Navigate(start),
		chromedp.WaitVisible(chromedp.ID("sso-login")),
		chromedp.Click(chromedp.ID("sso-login")),
		browsertest.ProviderLogin(email, password),
		chromedp.WaitVisible(sel),
	); err != nil {
		t.Fatalf("sign-in as %s: %v", email, err)
	}
}

func text[S chromedp.Selectable](t *testing.T, ctx context.Context, sel S) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %v: %v", sel, err)
	}
	return strings.TrimSpace(v)
}

func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// humanBytes is the pages' way of showing a byte count.
func humanBytes(n uint64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= 1000 && i < 5 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %cB", f, "kMGTP"[i-1])
}

// sameMoment reads the admin API's sessions and status, runs read, and reads them again
// until both readings agree: what read saw is then what the admin API says.
func (w *world) sameMoment(read func()) ([]admin.Session, admin.Status) {
	t := w.t
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for try := 0; try < 20; try++ {
		s1, err1 := w.admin.Sessions(ctx)
		st1, err2 := w.admin.Status(ctx)
		read()
		s2, err3 := w.admin.Sessions(ctx)
		st2, err4 := w.admin.Status(ctx)
		if err := firstErr(err1, err2, err3, err4); err != nil {
			t.Fatal(err)
		}
		if reflect.DeepEqual(s1, s2) && reflect.DeepEqual(st1.Pools, st2.Pools) && st1.Sessions == st2.Sessions {
			return s1, st1
		}
	}
	t.Fatal("the gateway's numbers kept changing while the page was read")
	return nil, admin.Status{}
}

// traffic opens a connection through the laptop's SOCKS proxy to an address behind the
// gateway (nobody answers: its SYNs are the traffic) until the gateway counts bytes in.
func (w *world) traffic(socks string) {
	t := w.t
	c, err := net.DialTimeout("tcp", socks, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// SOCKS5: no authentication, CONNECT 192.0.2.10:80.
	if _, err := c.Write([]byte{5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 10, 0, 80}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "traffic through the tunnel", func() error {
		ss, err := w.admin.Sessions(context.Background())
		if err != nil || len(ss) != 1 || ss[0].BytesIn == 0 {
			return fmt.Errorf("sessions %+v %v", ss, err)
		}
		return nil
	})
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// TestConsoleInBrowser: in headless Chromium, an operator signs in through the provider's
// page; the overview, sessions, leases and events pages render (screenshots) with the admin
// API's numbers of the same moment; the operator kicks alice's session (gone) and issues a
// token (shown once, never in a URL). Alice, no operator, is refused the operator pages,
// sees her laptop's certificate with its live session and revokes it: her tunnel goes down
// within a second.
func TestConsoleInBrowser(t *testing.T) {
	w := newWorld(t)
	socks := freePort(t)
	laptop, states := w.laptop("alice@corp.example", socks)
	up := waitState(t, states, "up", waitTimeout)
	serial := laptop.Leaf.SerialNumber.String()
	w.traffic(socks)

	ctx := browsertest.New(t, browsertest.Options{TrustPEM: w.trust})
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// The operator (by the provider's admin group).
	signIn(t, ctx, w.consoleURL+"/ops", "grace@corp.example", "grace-pw", chromedp.ID("stat-sessions"))
	if u := location(t, ctx); u != w.consoleURL+"/ops" {
		t.Fatalf("after sign-in at %s", u)
	}
	var shown map[string]string
	_, st := w.sameMoment(func() {
		if err := chromedp.Do(ctx, chromedp.Navigate(w.consoleURL+"/ops"), chromedp.WaitVisible(chromedp.ID("pools"))); err != nil {
			t.Fatal(err)
		}
		shown = map[string]string{
			"sessions": text(t, ctx, chromedp.ID("stat-sessions")),
			"used":     text(t, ctx, chromedp.CSS(`tr[data-pool="default"] td[data-field="used"]`)),
			"active":   text(t, ctx, chromedp.CSS(`tr[data-pool="default"] td[data-field="active"]`)),
			"size":     text(t, ctx, chromedp.CSS(`tr[data-pool="default"] td[data-field="size"]`)),
			"free":     text(t, ctx, chromedp.CSS(`tr[data-pool="default"] td[data-field="free"]`)),
		}
	})
	browsertest.Screenshot(t, ctx, "01-overview")
	p := st.Pools[0]
	want := map[string]string{"sessions": strconv.Itoa(st.Sessions), "used": strconv.FormatUint(p.Size-p.Free, 10),
		"active": strconv.FormatUint(p.Active, 10), "size": strconv.FormatUint(p.Size, 10), "free": strconv.FormatUint(p.Free, 10)}
	if !reflect.DeepEqual(shown, want) || st.Sessions != 1 || p.Active != 1 {
		t.Fatalf("overview shows %v, the admin API %v", shown, want)
	}

	// The sessions page: alice's session as the admin API has it.
	var row map[string]string
	sessions, _ := w.sameMoment(func() {
		if err := chromedp.Do(ctx, chromedp.Navigate(w.consoleURL+"/ops/sessions"), chromedp.WaitVisible(chromedp.ID("sessions"))); err != nil {
			t.Fatal(err)
		}
		row = map[string]string{}
		for _, f := range []string{"identity", "lease", "transport", "endpoint", "bytes_in", "bytes_out"} {
			row[f] = text(t, ctx, chromedp.CSS(`tr[data-session] td[data-field="`+f+`"]`))
		}
	})
	if len(sessions) != 1 {
		t.Fatalf("sessions %+v", sessions)
	}
	s := sessions[0]
	wantRow := map[string]string{"identity": s.Identity, "lease": s.Lease, "transport": s.Transport, "endpoint": s.Endpoint,
		"bytes_in": humanBytes(s.BytesIn), "bytes_out": humanBytes(s.BytesOut)}
	if !reflect.DeepEqual(row, wantRow) || s.Identity != "alice@corp.example" || s.Lease != up.Lease || s.Serial != serial {
		t.Fatalf("sessions page row %v, admin API %v (%+v)", row, wantRow, s)
	}
	// The script's live numbers arrive.
	if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS("body[data-live-updated]"))); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, ctx, "02-sessions")
	for _, pg := range []struct{ path, sel, name string }{
		{"/ops/leases", "table.leases", "03-leases"},
		{"/ops/events", "events", "04-events"},
	} {
		sel := chromedp.CSS(pg.sel)
		if pg.sel == "events" {
			sel = chromedp.CSS("#events")
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(w.consoleURL+pg.path), chromedp.WaitVisible(sel)); err != nil {
			t.Fatal(err)
		}
		browsertest.Screenshot(t, ctx, pg.name)
	}
	if body := text(t, ctx, chromedp.ID("events")); !strings.Contains(body, "granted") || !strings.Contains(body, s.ID) {
		t.Errorf("events page lacks alice's granted session:\n%s", body)
	}

	// Kick alice's session, after the confirmation.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.consoleURL+"/ops/sessions"),
		chromedp.Click(chromedp.CSS(`tr[data-session="`+s.ID+`"] a.kick`)),
		chromedp.WaitVisible(chromedp.ID("confirm-kick")),
	); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, ctx, "05-kick-confirm")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("confirm-kick")), chromedp.WaitVisible(chromedp.ID("message"))); err != nil {
		t.Fatal(err)
	}
	if msg := text(t, ctx, chromedp.ID("message")); !strings.Contains(msg, "Session "+s.ID+" of alice@corp.example was closed") {
		t.Fatalf("after the kick: %q", msg)
	}
	now, err := w.admin.Sessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range now {
		if o.ID == s.ID {
			t.Fatalf("session %s still live after the kick", s.ID)
		}
	}
	// The laptop reconnects (its certificate is still good).
	waitState(t, states, "up", waitTimeout)

	// A token: confirmed, shown once on the result page, never in a URL.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.consoleURL+"/ops/sessions"),
		chromedp.SendKeys(chromedp.ID("token-identity"), "dave@corp.example"),
		chromedp.SendKeys(chromedp.ID("token-ttl"), "30m"),
		chromedp.Submit(chromedp.ID("token-identity")),
		chromedp.WaitVisible(chromedp.ID("confirm-token")),
		chromedp.Click(chromedp.ID("confirm-token")),
		chromedp.WaitVisible(chromedp.ID("token")),
	); err != nil {
		t.Fatal(err)
	}
	tok := text(t, ctx, chromedp.ID("token"))
	if len(tok) < 100 || strings.Contains(location(t, ctx), tok) || strings.Contains(location(t, ctx), "token=") {
		t.Fatalf("token %q at %s", tok, location(t, ctx))
	}
	browsertest.Screenshot(t, ctx, "06-token")

	// Alice, in a browser of her own: no operator.
	actx := browsertest.New(t, browsertest.Options{TrustPEM: w.trust})
	actx, acancel := context.WithTimeout(actx, 2*time.Minute)
	defer acancel()
	signIn(t, actx, w.consoleURL+"/", "alice@corp.example", "alice-pw", chromedp.ID("devices"))
	if err := chromedp.Do(actx, chromedp.Navigate(w.consoleURL+"/ops/sessions"), chromedp.WaitVisible(chromedp.ID("message"))); err != nil {
		t.Fatal(err)
	}
	if msg := text(t, actx, chromedp.ID("message")); !strings.Contains(msg, "for the gateway's operators") {
		t.Fatalf("alice on /ops/sessions: %q", msg)
	}
	browsertest.Screenshot(t, actx, "07-user-refused")
	var live admin.Session
	waitFor(t, "alice's new session", func() error {
		ss, err := w.admin.Sessions(context.Background())
		if err != nil || len(ss) != 1 {
			return fmt.Errorf("sessions %v %v", ss, err)
		}
		live = ss[0]
		return nil
	})
	if err := chromedp.Do(actx, chromedp.Navigate(w.consoleURL+"/me"), chromedp.WaitVisible(chromedp.ID("devices"))); err != nil {
		t.Fatal(err)
	}
	rowSel := `tr[data-serial="` + serial + `"]`
	if got := text(t, actx, chromedp.CSS(rowSel+` td[data-field="last_seen"]`)); got != "connected now" {
		t.Errorf("last seen %q", got)
	}
	if got := text(t, actx, chromedp.CSS(rowSel+` td[data-field="address"]`)); got != live.Lease {
		t.Errorf("address %q, the admin API %q", got, live.Lease)
	}
	if got := text(t, actx, chromedp.CSS(rowSel+` td[data-field="session"]`)); !strings.HasPrefix(got, live.ID) {
		t.Errorf("session %q, the admin API %q", got, live.ID)
	}
	browsertest.Screenshot(t, actx, "08-devices")
	if err := chromedp.Do(actx, chromedp.Click(chromedp.CSS(rowSel+" a.revoke")), chromedp.WaitVisible(chromedp.ID("confirm-revoke"))); err != nil {
		t.Fatal(err)
	}
	browsertest.Screenshot(t, actx, "09-revoke-confirm")
	drain(states)
	clicked := time.Now()
	if err := chromedp.Do(actx, chromedp.Click(chromedp.ID("confirm-revoke"))); err != nil {
		t.Fatal(err)
	}
	waitState(t, states, "connecting", 5*time.Second)
	if d := time.Since(clicked); d > time.Second {
		t.Errorf("the tunnel went down %v after the revocation was confirmed, want within 1 s", d)
	}
	if err := chromedp.Do(actx, chromedp.WaitVisible(chromedp.ID("message"))); err != nil {
		t.Fatal(err)
	}
	if msg := text(t, actx, chromedp.ID("message")); !strings.Contains(msg, "Certificate "+serial+" is revoked") || !strings.Contains(msg, "1 session(s) closed") {
		t.Fatalf("after the revocation: %q", msg)
	}
	browsertest.Screenshot(t, actx, "10-revoked")
	ss, err := w.admin.Sessions(context.Background())
	if err != nil || len(ss) != 0 {
		t.Fatalf("sessions after the revocation: %v %v", ss, err)
	}
}

func drain(ch <-chan client.Status) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
