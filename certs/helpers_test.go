package certs_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/certstest"
)

// fakeClock is a settable clock; After fires when Advance passes the
// deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Waiters reports how many After timers are pending.
func (c *fakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
			continue
		}
		keep = append(keep, w)
	}
	c.waiters = keep
}

func testOptions(clk *fakeClock) certs.Options {
	return certs.Options{
		DNSNames:    []string{"gw.dstm.test"},
		IPAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		Now:         clk.Now,
		After:       clk.After,
	}
}

// newCA initialises a CA in a fresh directory; it is closed in Cleanup.
func newCA(t testing.TB, clk *fakeClock) (*certs.CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := certs.Init(dir, testOptions(clk))
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { _ = ca.Close() })
	return ca, dir
}

// csrFor makes a CSR with CN cn and the SAN an identity gets.
func csrFor(t testing.TB, key *ecdsa.PrivateKey, cn string, sans ...string) *x509.CertificateRequest {
	t.Helper()
	tpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	for _, s := range sans {
		if containsAt(s) {
			tpl.EmailAddresses = append(tpl.EmailAddresses, s)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func containsAt(s string) bool {
	for i := range len(s) {
		if s[i] == '@' {
			return true
		}
	}
	return false
}

// enrollIdentity issues a token and enrolls a fresh key for identity.
func enrollIdentity(t testing.TB, ca *certs.CA, identity string) ([]*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	tok, err := ca.Token(identity, 0)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	key := certstest.NewKey(t)
	chain, err := ca.Enroll(t.Context(), tok, csrFor(t, key, identity, identity))
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	return chain, key
}
