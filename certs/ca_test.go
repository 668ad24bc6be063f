package certs_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
)

func TestInitLayoutAndPermissions(t *testing.T) {
	clk := newClock()
	ca, dir := newCA(t, clk)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", fi.Mode().Perm())
	}
	for _, f := range []string{"root_ca.key", "intermediate_ca.key", "provisioner.key", "server.key", "ca.db", "index.db", "ca.json"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	sum := sha256.Sum256(ca.Root().Raw)
	if got, want := ca.Fingerprint(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("fingerprint %s, want %s", got, want)
	}
	root := ca.Root()
	if root.PublicKeyAlgorithm != x509.ECDSA || !root.IsCA || ca.Intermediate().CheckSignatureFrom(root) != nil {
		t.Errorf("root/intermediate not an ECDSA CA pair")
	}
	if root.NotAfter.Sub(clk.Now()) < 9*365*24*time.Hour {
		t.Errorf("root lifetime too short: %v", root.NotAfter)
	}
}

func TestInitRefusesExistingCA(t *testing.T) {
	clk := newClock()
	ca, dir := newCA(t, clk)
	fp := ca.Fingerprint()
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := certs.Init(dir, testOptions(clk))
	if !errors.Is(err, certs.ErrExists) {
		t.Fatalf("second Init: err %v, want ErrExists", err)
	}
	again, err := certs.Open(dir, testOptions(clk))
	if err != nil {
		t.Fatalf("Open after refused Init: %v", err)
	}
	defer again.Close()
	if again.Fingerprint() != fp {
		t.Errorf("refused Init changed the root")
	}
}

func TestOpenErrors(t *testing.T) {
	clk := newClock()
	if _, err := certs.Open(t.TempDir(), testOptions(clk)); !errors.Is(err, certs.ErrNotInitialized) {
		t.Errorf("Open empty dir: %v, want ErrNotInitialized", err)
	}
	ca, dir := newCA(t, clk)
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "intermediate_ca.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Open(dir, testOptions(clk)); err == nil {
		t.Errorf("Open accepted a world-readable CA key")
	}
	bad := testOptions(clk)
	bad.DNSNames, bad.IPAddresses = nil, nil
	if _, err := certs.Init(filepath.Join(t.TempDir(), "x"), bad); err == nil {
		t.Errorf("Init without server names succeeded")
	}
}

func TestTokenValidation(t *testing.T) {
	ca, _ := newCA(t, newClock())
	tests := []struct {
		name     string
		identity string
		ttl      time.Duration
		want     error
	}{
		{"email", "alice@corp.example", 0, nil},
		{"dns", "laptop-7.corp.example", time.Hour, nil},
		{"week", "bob@corp.example", 7 * 24 * time.Hour, nil},
		{"too long ttl", "bob@corp.example", 8 * 24 * time.Hour, certs.ErrBadTTL},
		{"too short ttl", "bob@corp.example", time.Second, certs.ErrBadTTL},
		{"negative ttl", "bob@corp.example", -time.Hour, certs.ErrBadTTL},
		{"empty", "", 0, certs.ErrBadIdentity},
		{"space", "alice @corp", 0, certs.ErrBadIdentity},
		{"two at", "a@b@c", 0, certs.ErrBadIdentity},
		{"wildcard", "*.corp.example", 0, certs.ErrBadIdentity},
		{"ip", "192.0.2.1", 0, certs.ErrBadIdentity},
		{"newline", "alice\n@corp", 0, certs.ErrBadIdentity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.Token(tc.identity, tc.ttl)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("Token(%q, %v): %v, want %v", tc.identity, tc.ttl, err, tc.want)
			}
		})
	}
}
