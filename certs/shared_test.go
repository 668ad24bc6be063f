package certs_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/certstest"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
)

func etcdClient(t *testing.T, c *etcdtest.Cluster) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// copyCA copies a gateway's CA keys into a new directory (see certstest.CopyKeys).
func copyCA(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "ca")
	certstest.CopyKeys(t, from, to)
	return to
}

func openShared(t *testing.T, dir string, cli *clientv3.Client, prefix string) *certs.CA {
	t.Helper()
	opts := testOptions(newClock())
	opts.Now, opts.After = time.Now, time.After
	opts.Shared = &certs.Shared{Client: cli, Prefix: prefix}
	ca, err := certs.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open shared: %v", err)
	}
	t.Cleanup(func() { _ = ca.Close() })
	return ca
}

// TestSharedCA: two gateways with the same CA keys and the state in etcd: a token is used
// once across both, a certificate from one renews on the other, and a revocation on one is
// refused and published by the other at once.
func TestSharedCA(t *testing.T) {
	cli := etcdClient(t, etcdtest.Start(t, 1))
	first, dirA := newCA(t, newClock())
	first.Close()
	a := openShared(t, dirA, cli, "/c1/")
	b := openShared(t, copyCA(t, dirA), cli, "/c1/")
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	events, unsub := b.Subscribe(4)
	defer unsub()

	tok, err := a.Token("alice@corp.example", 0)
	if err != nil {
		t.Fatal(err)
	}
	key := certstest.NewKey(t)
	chain, err := b.Enroll(ctx, tok, csrFor(t, key, "alice@corp.example", "alice@corp.example"))
	if err != nil {
		t.Fatalf("enroll on b with a's token: %v", err)
	}
	if _, err := a.Enroll(ctx, tok, csrFor(t, key, "alice@corp.example", "alice@corp.example")); !errors.Is(err, certs.ErrTokenUsed) {
		t.Fatalf("the token again on a: %v, want ErrTokenUsed", err)
	}
	if _, err := a.Renew(ctx, chain[0], nil); err != nil {
		t.Fatalf("renew on a of b's certificate: %v", err)
	}

	start := time.Now()
	serials, err := a.RevokeIdentity(ctx, "alice@corp.example")
	if err != nil || len(serials) != 2 {
		t.Fatalf("revoke on a: %v %v", serials, err)
	}
	for range 2 {
		select {
		case ev := <-events:
			if ev.Identity != "alice@corp.example" {
				t.Fatalf("event %+v", ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("b published no revocation")
		}
	}
	t.Logf("revocation on a published by b after %v", time.Since(start))
	for _, s := range serials {
		if !b.IsRevoked(s) {
			t.Errorf("b does not refuse %s", s)
		}
	}
	der, err := b.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil || len(crl.RevokedCertificateEntries) != 2 {
		t.Fatalf("b's CRL: %v, %d entries", err, len(crl.RevokedCertificateEntries))
	}
	if _, err := b.Renew(ctx, chain[0], nil); err == nil {
		t.Fatal("b renewed a revoked certificate")
	}
}

func TestSharedCARootMismatch(t *testing.T) {
	cli := etcdClient(t, etcdtest.Start(t, 1))
	one, dir1 := newCA(t, newClock())
	one.Close()
	openShared(t, dir1, cli, "/c2/")
	other, dir2 := newCA(t, newClock())
	other.Close()
	opts := testOptions(newClock())
	opts.Shared = &certs.Shared{Client: cli, Prefix: "/c2/"}
	if _, err := certs.Open(dir2, opts); !errors.Is(err, certs.ErrRootMismatch) {
		t.Fatalf("a CA with another root joined: %v", err)
	}
}

// TestSharedCAMovesIndex: a single gateway that joins a cluster brings its certificates along.
func TestSharedCAMovesIndex(t *testing.T) {
	cli := etcdClient(t, etcdtest.Start(t, 1))
	single, dir := newCA(t, newClock())
	chain, _ := enrollIdentity(t, single, "bob@corp.example")
	tok, err := single.Token("carol@corp.example", 0)
	if err != nil {
		t.Fatal(err)
	}
	key := certstest.NewKey(t)
	if _, err := single.Enroll(t.Context(), tok, csrFor(t, key, "carol@corp.example", "carol@corp.example")); err != nil {
		t.Fatal(err)
	}
	single.Close()
	ca := openShared(t, dir, cli, "/c3/")
	for _, f := range []string{"index.db.moved-to-etcd", "ca.db.moved-to-etcd"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("not moved: %v", err)
		}
	}
	if _, err := ca.Enroll(t.Context(), tok, csrFor(t, key, "carol@corp.example", "carol@corp.example")); !errors.Is(err, certs.ErrTokenUsed) {
		t.Fatalf("a token spent before the move: %v, want ErrTokenUsed", err)
	}
	if serials, err := ca.RevokeIdentity(context.Background(), "bob@corp.example"); err != nil || len(serials) != 1 || serials[0] != chain[0].SerialNumber.String() {
		t.Fatalf("revoke by identity after the move: %v %v", serials, err)
	}
}

// TestSharedRenewalRacingRevocation: a gateway that has not yet heard of a revocation made on
// another one still cannot renew the revoked certificate (the renewal's record is refused in
// etcd, and the new certificate never leaves), and an identity revocation catches a renewal
// recorded just before it.
func TestSharedRenewalRacingRevocation(t *testing.T) {
	cli := etcdClient(t, etcdtest.Start(t, 1))
	first, dirA := newCA(t, newClock())
	first.Close()
	a := openShared(t, dirA, cli, "/c4/") // Run is not started: a hears of nothing
	b := openShared(t, copyCA(t, dirA), cli, "/c4/")
	chain, _ := enrollIdentity(t, a, "erin@corp.example")
	if err := b.Revoke(t.Context(), chain[0].SerialNumber.String(), "key compromise"); err != nil {
		t.Fatal(err)
	}
	if a.IsRevoked(chain[0].SerialNumber.String()) {
		t.Fatal("a heard of the revocation: the race is not exercised")
	}
	if _, err := a.Renew(t.Context(), chain[0], nil); !errors.Is(err, certs.ErrRevoked) {
		t.Fatalf("a renewed a certificate revoked on b: %v", err)
	}

	// A renewal recorded on a just before b revokes the identity is revoked too.
	chain2, _ := enrollIdentity(t, a, "finn@corp.example")
	renewed, err := a.Renew(t.Context(), chain2[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	serials, err := b.RevokeIdentity(t.Context(), "finn@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(serials, renewed[0].SerialNumber.String()) || !slices.Contains(serials, chain2[0].SerialNumber.String()) {
		t.Fatalf("revoked %v, want both %s and its renewal %s", serials, chain2[0].SerialNumber, renewed[0].SerialNumber)
	}
}
