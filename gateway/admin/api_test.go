package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

const testTimeout = 10 * time.Second

// startServer serves b on a real unix socket in a temporary directory and
// returns a client for it. Cleanup cancels the server and waits for Serve to
// return.
func startServer(t *testing.T, b Backend) (*Client, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(b, zerolog.Nop()).ServeListener(ctx, ln) }()
	c := NewClient(path)
	t.Cleanup(func() {
		c.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(testTimeout):
			t.Error("Serve did not return after cancel")
		}
	})
	return c, path
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func byAddr(a, b Lease) int { return strings.Compare(a.Addr, b.Addr) }

func TestListings(t *testing.T) {
	c, _ := startServer(t, newFakeBackend())
	ctx := testCtx(t)

	leases, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := fixtureLeases()
	slices.SortFunc(leases, byAddr)
	slices.SortFunc(want, byAddr)
	if !reflect.DeepEqual(leases, want) {
		t.Errorf("Leases:\n got %+v\nwant %+v", leases, want)
	}

	sessions, err := c.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantS := fixtureSessions()
	bySID := func(a, b Session) int { return strings.Compare(a.ID, b.ID) }
	slices.SortFunc(sessions, bySID)
	slices.SortFunc(wantS, bySID)
	if !reflect.DeepEqual(sessions, wantS) {
		t.Errorf("Sessions:\n got %+v\nwant %+v", sessions, wantS)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "v0.1.0-test" || !st.Started.Equal(t0) || st.Sessions != 3 || len(st.Pools) != 2 ||
		st.Pools[0].Active != 2 || st.Pools[0].Static != 1 || st.Pools[0].Held != 1 || st.Pools[1].Offered != 1 {
		t.Errorf("Status = %+v", st)
	}
}

func TestEmptyListsAreEmptyNotNull(t *testing.T) {
	f := newFakeBackend()
	f.leases, f.sessions = map[string]Lease{}, map[string]Session{}
	_, path := startServer(t, f)
	for _, p := range []string{"/v1/leases", "/v1/sessions"} {
		code, body := rawRequest(t, path, http.MethodGet, p, "")
		if code != http.StatusOK || strings.TrimSpace(body) != "[]" {
			t.Errorf("GET %s = %d %q, want 200 []", p, code, body)
		}
	}
}

func TestKick(t *testing.T) {
	f := newFakeBackend()
	c, _ := startServer(t, f)
	ctx := testCtx(t)
	for _, id := range []string{"s-a1", "odd/id%1"} {
		if err := c.Kick(ctx, id); err != nil {
			t.Fatalf("Kick(%q): %v", id, err)
		}
	}
	sessions, err := c.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions) != 1 || sessions[0].ID != "s-b1" {
		t.Fatalf("sessions after kick = %+v, want only s-b1", sessions)
	}
	if l := f.leases["192.0.2.10"]; l.State != "held" || l.Session != "" {
		t.Fatalf("lease after kick = %+v, want held without session", l)
	}

	err = c.Kick(ctx, "s-a1")
	var ae *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("second Kick = %#v, want a 404 *Error matching ErrNotFound", err)
	}
	if err.Error() != `session "s-a1": not found` {
		t.Fatalf("message = %q, want the backend's text", err.Error())
	}
	if ExitCode(err) != ExitNotFound {
		t.Fatalf("ExitCode = %d, want %d", ExitCode(err), ExitNotFound)
	}
	if err := c.Kick(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Kick(\"\") = %v, want ErrInvalid", err)
	}
}

func TestRevoke(t *testing.T) {
	f := newFakeBackend()
	c, _ := startServer(t, f)
	ctx := testCtx(t)

	res, err := c.Revoke(ctx, "alice@corp")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res, RevokeResult{Serials: []string{"1001", "1002"}, Sessions: 1}) {
		t.Fatalf("Revoke(alice) = %+v", res)
	}
	res, err = c.Revoke(ctx, "2001")
	if err != nil || !reflect.DeepEqual(res, RevokeResult{Serials: []string{"2001"}, Sessions: 1}) {
		t.Fatalf("Revoke(2001) = %+v, %v", res, err)
	}
	if _, err := c.Revoke(ctx, "alice@corp"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking again = %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "alice corp", "x\x00y", strings.Repeat("a", maxNameLen+1)} {
		if _, err := c.Revoke(ctx, bad); !errors.Is(err, ErrInvalid) || ExitCode(err) != ExitUsage {
			t.Errorf("Revoke(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestToken(t *testing.T) {
	f := newFakeBackend()
	c, _ := startServer(t, f)
	ctx := testCtx(t)
	tests := []struct {
		name    string
		ttl     time.Duration
		wantExp time.Duration
		wantErr error
	}{
		{name: "default ttl", ttl: 0, wantExp: 5 * time.Minute},
		{name: "explicit ttl", ttl: 90 * time.Second, wantExp: 90 * time.Second},
		{name: "negative ttl", ttl: -time.Minute, wantErr: ErrInvalid},
		{name: "ttl over backend maximum", ttl: 48 * time.Hour, wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := c.Token(ctx, "dave@corp", tt.ttl)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.Identity != "dave@corp" || len(tok.Token) != 32 || !tok.Expires.Equal(f.now().Add(tt.wantExp)) {
				t.Fatalf("token = %+v", tok)
			}
			if f.tokens[tok.Token] != tok {
				t.Fatalf("backend did not record the token the client got")
			}
		})
	}
	if _, err := c.Token(ctx, "", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty identity = %v, want ErrInvalid", err)
	}
}

func TestBackendErrorClasses(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		status   int
		class    error
		exitCode int
	}{
		{"internal", errors.New("store: disk full"), http.StatusInternalServerError, ErrInternal, ExitFailure},
		{"unavailable", ErrUnavailable, http.StatusServiceUnavailable, ErrUnavailable, ExitUnavailable},
		{"not found wrapped", errors.Join(errors.New("pool x"), ErrNotFound), http.StatusNotFound, ErrNotFound, ExitNotFound},
		{"invalid", ErrInvalid, http.StatusBadRequest, ErrInvalid, ExitUsage},
		{"context", context.DeadlineExceeded, http.StatusServiceUnavailable, ErrUnavailable, ExitUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := startServer(t, errBackend{tt.err})
			ctx := testCtx(t)
			calls := map[string]func() error{
				"leases":   func() error { _, err := c.Leases(ctx); return err },
				"sessions": func() error { _, err := c.Sessions(ctx); return err },
				"kick":     func() error { return c.Kick(ctx, "s") },
				"revoke":   func() error { _, err := c.Revoke(ctx, "s"); return err },
				"token":    func() error { _, err := c.Token(ctx, "a@b", 0); return err },
				"status":   func() error { _, err := c.Status(ctx); return err },
			}
			for name, call := range calls {
				err := call()
				var ae *Error
				if !errors.As(err, &ae) || ae.Status != tt.status || !errors.Is(err, tt.class) {
					t.Errorf("%s: err = %#v, want status %d class %v", name, err, tt.status, tt.class)
					continue
				}
				if ae.Message != tt.err.Error() || ExitCode(err) != tt.exitCode {
					t.Errorf("%s: message %q exit %d, want %q exit %d", name, ae.Message, ExitCode(err), tt.err.Error(), tt.exitCode)
				}
			}
		})
	}
}

func TestRawRequests(t *testing.T) {
	_, path := startServer(t, newFakeBackend())
	tests := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{http.MethodGet, "/v2/leases", "", http.StatusNotFound, codeNotFound},
		{http.MethodGet, "/v1/revoke", "", http.StatusNotFound, codeNotFound},
		{http.MethodPost, "/v1/revoke", `{"target":"x","extra":1}`, http.StatusBadRequest, codeInvalid},
		{http.MethodPost, "/v1/revoke", `{"target":`, http.StatusBadRequest, codeInvalid},
		{http.MethodPost, "/v1/revoke", `{"target":"` + strings.Repeat("a", maxRequestBody) + `"}`, http.StatusBadRequest, codeInvalid},
		{http.MethodPost, "/v1/tokens", `{"identity":"a@b","ttl":"soon"}`, http.StatusBadRequest, codeInvalid},
		{http.MethodPost, "/v1/tokens", `{"identity":"a@b","ttl":"0s"}`, http.StatusBadRequest, codeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, body := rawRequest(t, path, tt.method, tt.path, tt.body)
			err := readError(&http.Response{StatusCode: status, Status: http.StatusText(status), Body: io.NopCloser(strings.NewReader(body))})
			var ae *Error
			if status != tt.status || !errors.As(err, &ae) || ae.Code != tt.code || ae.Message == "" {
				t.Fatalf("status %d body %q, want %d code %s", status, body, tt.status, tt.code)
			}
		})
	}
}

// rawRequest sends one request through the unix socket with the client's
// transport and returns status and body.
func rawRequest(t *testing.T, path, method, urlPath, body string) (int, string) {
	t.Helper()
	c := NewClient(path)
	defer c.Close()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testCtx(t), method, requestBaseURL+urlPath, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestConcurrentClients(t *testing.T) {
	c, _ := startServer(t, newFakeBackend())
	ctx := testCtx(t)
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for range 20 {
				if _, err = c.Leases(ctx); err != nil {
					break
				}
				if _, err = c.Token(ctx, "x@y", time.Minute); err != nil {
					break
				}
			}
			errc <- err
		}()
	}
	for range 8 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("timeout")
		}
	}
}

func TestClientContextCancelled(t *testing.T) {
	c, _ := startServer(t, newFakeBackend())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Leases(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
