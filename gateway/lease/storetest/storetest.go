// Package storetest is the conformance suite of lease.Store: every
// implementation (memory, bbolt, a future etcd store) runs Run in its
// tests to prove the contract the lease manager relies on.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

// Run checks the Store contract on stores returned by open, which must
// return a new, empty store each time.
func Run(t *testing.T, open func(t *testing.T) lease.Store) {
	t.Run("CompareAndSwap", func(t *testing.T) { testCAS(t, open(t)) })
	t.Run("ConcurrentClaims", func(t *testing.T) { testConcurrentClaims(t, open(t)) })
}

func testCAS(t *testing.T, s lease.Store) {
	ctx := context.Background()
	a := netip.MustParseAddr("10.0.0.1")
	l := lease.Lease{Addr: a, Pool: "main", Identity: "x", Session: "s", State: lease.StateOffered,
		Endpoint: netip.MustParseAddr("2001:db8::7"), Transport: "v4v6",
		Granted: time.Unix(100, 0).UTC(), Expires: time.Unix(130, 0).UTC()}
	other := netip.MustParseAddr("10.0.0.2")
	// Versions are the store's (a counter, or a revision): each step reads the current one.
	version := func() uint64 {
		t.Helper()
		snap, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range snap.Leases {
			if r.Lease.Addr == a {
				return r.Version
			}
		}
		return 0
	}
	var v1, v2 uint64
	for _, tc := range []struct {
		name string
		txn  func() lease.Txn
		want error
		then func()
	}{
		{"create", func() lease.Txn {
			return lease.Txn{Leases: []lease.Change{{Addr: a, Prev: 0, Lease: &l}}, Index: []lease.IndexChange{{Identity: "x", Addrs: []netip.Addr{a}}}}
		}, nil, func() { v1 = version() }},
		{"create again", func() lease.Txn { return lease.Txn{Leases: []lease.Change{{Addr: a, Prev: 0, Lease: &l}}} }, lease.ErrConflict, nil},
		{"stale update", func() lease.Txn { return lease.Txn{Leases: []lease.Change{{Addr: a, Prev: v1 + 7, Lease: &l}}} }, lease.ErrConflict, nil},
		{"update", func() lease.Txn { return lease.Txn{Leases: []lease.Change{{Addr: a, Prev: v1, Lease: &l}}} }, nil, func() { v2 = version() }},
		{"all or nothing", func() lease.Txn {
			return lease.Txn{Leases: []lease.Change{{Addr: other, Prev: 0, Lease: &l}, {Addr: a, Prev: v1}}, Index: []lease.IndexChange{{Identity: "y", Addrs: []netip.Addr{other}}}}
		}, lease.ErrConflict, nil},
		{"delete", func() lease.Txn {
			return lease.Txn{Leases: []lease.Change{{Addr: a, Prev: v2}}, Index: []lease.IndexChange{{Identity: "x"}}}
		}, nil, nil},
		{"recreate", func() lease.Txn { return lease.Txn{Leases: []lease.Change{{Addr: a, Prev: 0, Lease: &l}}} }, nil, nil},
	} {
		txn := tc.txn()
		err := s.Commit(ctx, txn)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if err == nil {
			// A store that reports new versions reports the ones Load sees.
			for _, c := range txn.Leases {
				if c.Next != 0 && c.Lease != nil && c.Addr == a && c.Next != version() {
					t.Fatalf("%s: Next %d, the store has %d", tc.name, c.Next, version())
				}
			}
		}
		if tc.then != nil {
			tc.then()
		}
	}
	if v1 == 0 || v2 == 0 || v1 == v2 {
		t.Fatalf("versions %d then %d: want two different non-zero versions", v1, v2)
	}
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Leases) != 1 || snap.Leases[0].Version == 0 || len(snap.Index) != 0 {
		t.Fatalf("snapshot %+v, want one record and no index", snap)
	}
	v3 := snap.Leases[0].Version
	if got := snap.Leases[0].Lease; got.Addr != l.Addr || got.Endpoint != l.Endpoint || !got.Granted.Equal(l.Granted) ||
		!got.Expires.Equal(l.Expires) || got.Transport != l.Transport || got.State != l.State || got.Identity != l.Identity || got.Session != l.Session {
		t.Fatalf("round trip %+v, want %+v", got, l)
	}
	var ce *lease.ConflictError
	err = s.Commit(ctx, lease.Txn{Leases: []lease.Change{{Addr: a, Prev: 0, Lease: &l}}})
	if !errors.As(err, &ce) || ce.Addr != a || ce.Current == nil || ce.Current.Lease.Identity != "x" || ce.Current.Version != v3 {
		t.Fatalf("conflict detail %v (current %+v), want version %d", err, ce, v3)
	}
}

// testConcurrentClaims races many claimers on few addresses: each address
// must be won exactly once.
func testConcurrentClaims(t *testing.T, s lease.Store) {
	const claimers, addrs = 16, 8
	ctx := context.Background()
	var mu sync.Mutex
	won := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range addrs {
				a := netip.AddrFrom4([4]byte{10, 1, 0, byte(i)})
				l := lease.Lease{Addr: a, Identity: fmt.Sprint("c", c), Session: "s", State: lease.StateOffered}
				err := s.Commit(ctx, lease.Txn{Leases: []lease.Change{{Addr: a, Prev: 0, Lease: &l}}})
				switch {
				case err == nil:
					mu.Lock()
					if prev, dup := won[a]; dup {
						t.Errorf("%v claimed by %s and %s", a, prev, l.Identity)
					}
					won[a] = l.Identity
					mu.Unlock()
				case !errors.Is(err, lease.ErrConflict):
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	snap, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(won) != addrs || len(snap.Leases) != addrs {
		t.Fatalf("%d won, %d records, want %d", len(won), len(snap.Leases), addrs)
	}
	for _, r := range snap.Leases {
		if won[r.Lease.Addr] != r.Lease.Identity {
			t.Errorf("%v stored for %s, won by %s", r.Lease.Addr, r.Lease.Identity, won[r.Lease.Addr])
		}
	}
}
