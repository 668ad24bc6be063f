// Package browsertest drives Debian's headless Chromium (chromedp) for
// tests of web pages: the identity provider's sign-in and the gateway's
// console. A test that needs a browser calls New; without Chromium on the
// machine (.ci/run installs it) the test fails, it is never skipped.
package browsertest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// Binary finds Chromium.
func Binary() (string, error) {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium on PATH (Debian: apt-get install chromium)")
}

// Options configures a browser.
type Options struct {
	// TrustPEM lists CA certificates (PEM) the browser trusts for HTTPS, by
	// their SPKI hashes; other certificate errors still fail.
	TrustPEM [][]byte
	// Netns, when set, runs Chromium inside that network namespace
	// (ip netns exec).
	Netns string
}

// New starts a headless Chromium for t and returns a context for chromedp
// actions; the browser is stopped when t ends. Artefacts (screenshots) go to
// Dir(t).
func New(t testing.TB, o Options) context.Context {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox, // tests run as root
		chromedp.Flag("headless", "new"),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	if len(o.TrustPEM) > 0 {
		hashes, err := spkiHashes(o.TrustPEM)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", hashes))
	}
	if o.Netns != "" {
		wrapper := filepath.Join(profile, "chromium-in-netns")
		script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", o.Netns, bin)
		if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
		opts = append(opts, chromedp.ExecPath(wrapper))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// Start the browser now so a missing or broken Chromium fails here. The
	// first run's context lives as long as the browser: no timeout on it.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// Dir is where a test's browser artefacts go: $DSTM_ARTEFACTS/<test> when
// set (CI keeps it), else the test's temporary directory.
func Dir(t testing.TB) string {
	base := os.Getenv("DSTM_ARTEFACTS")
	if base == "" {
		return t.TempDir()
	}
	d := filepath.Join(base, filepath.Clean("/" + t.Name())[1:])
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// Screenshot saves a full-page PNG of the current page as Dir(t)/name.png.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 is PNG
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(Dir(t), name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func spkiHashes(pems [][]byte) (string, error) {
	out := ""
	for _, p := range pems {
		for rest := p; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return "", err
			}
			if out != "" {
				out += ","
			}
			out += spkiHash(c)
		}
	}
	return out, nil
}

// Navigate loads url as chromedp.Navigate does, and again (up to 5 loads) when Chromium
// fails it with net::ERR_NETWORK_CHANGED: Chromium fails a load that overlaps a change of its
// namespace's interfaces or addresses (a test's TUN device or route coming up), where a user
// would reload.
func Navigate(url string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var err error
		for range 5 {
			if _, err = chromedp.Navigate(url)(ctx, tg); err == nil || !strings.Contains(err.Error(), "ERR_NETWORK_CHANGED") {
				return err
			}
		}
		return err
	})
}

// ProviderLogin fills in and submits the sign-in form of the tests' OpenID provider
// (internal/oidctest: fields username and password) once it shows.
func ProviderLogin(email, password string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for _, a := range []chromedp.Action[chromedp.Void]{
			chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), email),
			chromedp.SendKeys(chromedp.ID("password"), password),
			chromedp.Click(chromedp.CSS("button[type=submit]")),
		} {
			if _, err := a(ctx, tg); err != nil {
				return err
			}
		}
		return nil
	})
}
