package browsertest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dstmgw/dstm/internal/oidctest"
)

// TestBrowserSignIn: Chromium signs in on the provider's page (the
// provider's certificate trusted by its key) and lands on the redirect.
func TestBrowserSignIn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := oidctest.Start(ln, "127.0.0.1", []oidctest.Client{{ID: "native"}},
		[]oidctest.User{{Email: "bob@corp.example", Password: "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := New(t, Options{TrustPEM: [][]byte{p.CAPEM}})
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx,
		Navigate(p.Issuer+"device"),
		chromedp.WaitVisible(chromedp.ID("user_code")),
	); err != nil {
		t.Fatal(err)
	}
	body, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	Screenshot(t, ctx, "device-page")
	if !strings.Contains(strings.ToLower(body), "code") {
		t.Fatalf("device page body %q", body)
	}
}
