package boltstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/storetest"
)

func openTemp(t *testing.T) (*BoltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "leases.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func testConfig() lease.Config {
	return lease.Config{
		Pools:        []lease.PoolConfig{{Name: "main", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/16")}, ExcludeNetworkBroadcast: true}},
		Reservations: []lease.Reservation{{Identity: "static@corp", Addr: netip.MustParseAddr("10.8.0.9")}},
		MaxSessions:  2,
	}
}

func TestStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) lease.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestManagerPersistence(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	m, err := lease.New(testConfig(), s)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]netip.Addr{}
	for i := range 20 {
		id := fmt.Sprintf("user%d@corp", i)
		l, err := m.Offer(ctx, lease.Request{Identity: id, Session: "s"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Accept(ctx, l.Addr, "s", ""); err != nil {
			t.Fatal(err)
		}
		want[id] = l.Addr
		if i%3 == 0 {
			if err := m.Release(ctx, l.Addr, "s", lease.ReasonClosed); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := m.Offer(ctx, lease.Request{Identity: "static@corp", Session: "s"})
	if err != nil || !st.Static {
		t.Fatalf("static offer %+v %v", st, err)
	}
	// The store is exclusive: the offer lives in memory only and is not in the file, and
	// each session's release too: the file still has those leases active.
	before := slices.DeleteFunc(m.List(), func(l lease.Lease) bool { return l.Addr == st.Addr })
	inFile := slices.Clone(before)
	for i, l := range inFile {
		if l.State == lease.StateHeld {
			inFile[i].State, inFile[i].Expires = lease.StateActive, l.Granted.Add(lease.DefaultLifetime)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m2, err := lease.New(testConfig(), s2)
	if err != nil {
		t.Fatal(err)
	}
	after := m2.List()
	if !sameLeases(inFile, after) {
		t.Fatalf("state changed across reopen:\n%v\n%v", inFile, after)
	}
	// A gateway starts by holding the leases of the previous run for their identities: the
	// released ones are held again, the others now too.
	if n, err := m2.ReleaseAll(ctx, "restart"); err != nil || n != len(after) {
		t.Fatalf("ReleaseAll = %d, %v; want %d", n, err, len(after))
	}
	for _, l := range m2.List() {
		if l.State != lease.StateHeld || want[l.Identity] != l.Addr {
			t.Fatalf("after the restart %v is %s for %q, want held for its identity", l.Addr, l.State, l.Identity)
		}
	}
	if _, err := m2.Accept(ctx, st.Addr, "s", ""); !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("accepting an offer of the previous run: %v, want ErrNotFound", err)
	}
	// Every one comes back to its identity.
	for i := range 20 {
		id := fmt.Sprintf("user%d@corp", i)
		l, err := m2.Offer(ctx, lease.Request{Identity: id, Session: "s2"})
		if err != nil || l.Addr != want[id] {
			t.Fatalf("%s got %v %v, want %v", id, l.Addr, err, want[id])
		}
	}
}

func TestLockedFile(t *testing.T) {
	_, path := openTemp(t)
	start := time.Now()
	_, err := OpenBolt(path, BoltOptions{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "lease store "+path+" is locked by another process") {
		t.Fatalf("second open: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("lock timeout not honoured")
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		content func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"damaged record", func(t *testing.T, path string) {
			s, err := OpenBolt(path, BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.db.Update(func(tx *boltTx) error {
				return tx.Bucket(bucketLeases).Put([]byte{10, 0, 0, 1}, []byte{recordFormat, 1, 2})
			}); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign format", func(t *testing.T, path string) {
			s, err := OpenBolt(path, BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.db.Update(func(tx *boltTx) error {
				return tx.Bucket(bucketMeta).Put(keyFormat, []byte("other-9"))
			}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".db")
			tc.content(t, path)
			s, err := OpenBolt(path, BoltOptions{})
			if err == nil {
				_, err = lease.New(testConfig(), s)
				_ = s.Close()
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("want ErrCorrupt naming %s, got %v", path, err)
			}
		})
	}
}

func sameLeases(a, b []lease.Lease) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Addr != y.Addr || x.State != y.State || x.Identity != y.Identity || x.Session != y.Session ||
			x.Static != y.Static || x.Endpoint != y.Endpoint || x.Transport != y.Transport ||
			!x.Expires.Equal(y.Expires) || !x.Granted.Equal(y.Granted) {
			return false
		}
	}
	return true
}
