package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// earlierRunGhost builds the case of a session of an earlier run in a pool that a restart
// left out: alice's session in pool extra (its one address) ended as end says ("released",
// "released+graceful": then the gateway stopped, "live at a crash"), and the gateway restarted
// without that pool. It returns the restarted manager (ReleaseAll done, extra not yet added
// back), its store, the pool to add back and the session's address.
func earlierRunGhost(t *testing.T, exclusive bool, end string) (*Manager, *twinStore, PoolConfig, netip.Addr) {
	t.Helper()
	ctx := context.Background()
	clk := newFakeClock()
	main := PoolConfig{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/29")}, ExcludeNetworkBroadcast: true}
	extra := PoolConfig{Name: "extra", Prefixes: []netip.Prefix{mustPrefix("10.0.1.5/32")}}
	cfg := Config{Pools: []PoolConfig{main, extra}, MaxSessions: 1, OnLimit: Refuse, Now: clk.Now}
	st := newTwinStore(exclusive, nil)
	m, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.Offer(ctx, Request{Identity: "alice", Session: "s1", Pool: "extra"})
	if err != nil {
		t.Fatal(err)
	}
	if l, err = m.Accept(ctx, l.Addr, "s1", ""); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if end != "live at a crash" {
		if err := m.Release(ctx, l.Addr, "s1", ReasonClosed); err != nil {
			t.Fatal(err)
		}
	}
	if end == "released+graceful" {
		if _, err := m.ReleaseAll(ctx, "shutdown"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Minute)
	cfg2 := cfg
	cfg2.Pools = []PoolConfig{main}
	m2, err := New(cfg2, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.ReleaseAll(ctx, ReasonRestart); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	return m2, st, extra, l.Addr
}

// TestAddPoolHoldsEarlierSessions: a pool removed at a restart (its records kept as orphans)
// and added back by a reload. A session of the earlier run, ended before the restart or live
// at a crash, must come back held for its identity, not as an active lease of a session that
// no longer exists (which would count against the session limit).
func TestAddPoolHoldsEarlierSessions(t *testing.T) {
	ctx := context.Background()
	for _, exclusive := range []bool{false, true} {
		for _, end := range []string{"released", "released+graceful", "live at a crash"} {
			t.Run(fmt.Sprintf("%s/%s", storeKind(exclusive), end), func(t *testing.T) {
				m, st, extra, a := earlierRunGhost(t, exclusive, end)
				// The pool is added back by a reload.
				if err := m.AddPool(extra); err != nil {
					t.Fatal(err)
				}
				got, ok := m.Get(a)
				if !ok || got.State != StateHeld || got.Identity != "alice" {
					t.Errorf("after the pool came back %v is %+v %v, want held for alice (the session was one of the earlier run)", a, got, ok)
				}
				for _, ps := range m.Stats() {
					if ps.Active != 0 {
						t.Errorf("pool %s counts %d active leases, no session is live", ps.Name, ps.Active)
					}
				}
				if o, err := m.Offer(ctx, Request{Identity: "alice", Session: "s2", Pool: "extra"}); err != nil || o.Addr != a {
					t.Errorf("alice connecting again: %+v %v, want %v", o, err, a)
				}
				checkInvariants(t, m, st)
			})
		}
	}
}

// TestAddPoolHoldFailure: when the commit that holds the sessions of an earlier run fails (a
// shared store), AddPool returns ErrNotHeld and the pool is added all the same, once; the
// session stays as the store has it.
func TestAddPoolHoldFailure(t *testing.T) {
	for _, exclusive := range []bool{false, true} {
		t.Run(storeKind(exclusive), func(t *testing.T) {
			m, st, extra, ghost := earlierRunGhost(t, exclusive, "live at a crash")
			st.arm(true)
			err := m.AddPool(extra)
			committed := st.disarm()
			want := StateHeld
			if exclusive {
				if committed || err != nil {
					t.Fatalf("AddPool = %v (commit tried: %v), want nil and nothing committed", err, committed)
				}
			} else {
				if !committed || !errors.Is(err, ErrNotHeld) || !errors.Is(err, errInjected) {
					t.Fatalf("AddPool with a failing store = %v, want ErrNotHeld wrapping the store's error", err)
				}
				want = StateActive
			}
			if got, ok := m.Get(ghost); !ok || got.State != want || got.Identity != "alice" {
				t.Errorf("after AddPool %v is %+v %v, want %s for alice", ghost, got, ok, want)
			}
			added := false
			for _, ps := range m.Stats() {
				added = added || ps.Name == extra.Name
			}
			if !added {
				t.Errorf("pool %s not added", extra.Name)
			}
			if err := m.AddPool(extra); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("AddPool again = %v, want a duplicate pool", err)
			}
			checkInvariants(t, m, st)
		})
	}
}

// TestAddPoolNoWindow: AddPool adopts an active session of an earlier run and releases it in
// one critical section, so a concurrent Offer of the same identity never counts it against
// its session limit (Refuse).
func TestAddPoolNoWindow(t *testing.T) {
	ctx := context.Background()
	const iterations = 2000
	hits := 0
	for range iterations {
		m, _, extra, _ := earlierRunGhost(t, true, "live at a crash")
		var done atomic.Bool
		var wg sync.WaitGroup
		var limit int
		wg.Go(func() {
			for k := 0; !done.Load(); k++ {
				s := fmt.Sprintf("n%d", k)
				l, err := m.Offer(ctx, Request{Identity: "alice", Session: s})
				if errors.Is(err, ErrSessionLimit) {
					limit++
					continue
				}
				if err != nil {
					t.Errorf("Offer: %v", err)
					return
				}
				if err := m.Release(ctx, l.Addr, s, ReasonClosed); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		})
		if err := m.AddPool(extra); err != nil {
			t.Fatal(err)
		}
		done.Store(true)
		wg.Wait()
		if limit > 0 {
			hits++
		}
	}
	t.Logf("%d of %d runs refused alice an offer because of the ghost", hits, iterations)
	if hits > 0 {
		t.Errorf("the ghost of an earlier run counted against alice's limit in %d of %d runs (AddPool's unlock-then-release window)", hits, iterations)
	}
}

// TestFlushConcurrent: Flush (its Load outside the lock) concurrent with sessions that
// come, go, expire and are offered again must never write over a newer state: the store and
// the cache must agree afterwards (up to what stays in memory), a crash must hold the same
// leases, and a second Flush with nothing running must leave no release kept in memory.
func TestFlushConcurrent(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(20) {
		clk := newFakeClock()
		cfg := Config{
			Pools:    []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/28")}, ExcludeNetworkBroadcast: true}},
			Now:      clk.Now,
			Lifetime: time.Hour, HoldTime: 10 * time.Minute,
		}
		st := newTwinStore(true, nil)
		m, err := New(cfg, st)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var ops atomic.Int64
		stop := make(chan struct{})
		for w := range 4 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(w)))
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					ops.Add(1)
					id := fmt.Sprintf("id%d", rng.IntN(6))
					s := fmt.Sprintf("w%d-%d", w, k)
					l, err := m.Offer(ctx, Request{Identity: id, Session: s})
					if err != nil {
						continue
					}
					if rng.IntN(4) == 0 {
						_ = m.Release(ctx, l.Addr, s, ReasonClosed)
						continue
					}
					if _, err := m.Accept(ctx, l.Addr, s, ""); err != nil {
						continue
					}
					if rng.IntN(3) == 0 {
						clk.Advance(time.Duration(rng.IntN(20)) * time.Minute)
						_, _ = m.Expire(ctx)
					}
					_ = m.Release(ctx, l.Addr, s, ReasonClosed)
				}
			})
		}
		flushes, flushed := 0, 0
		for ops.Load() < 3000 {
			n, err := m.Flush(ctx)
			if err != nil {
				t.Fatal(err)
			}
			flushes++
			flushed += n
		}
		if seed == 0 {
			t.Logf("seed 0: %d flushes wrote %d holds during %d operations", flushes, flushed, ops.Load())
		}
		close(stop)
		wg.Wait()
		checkInvariants(t, m, st)
		if _, err := m.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// Nothing runs: every release kept in memory is now written.
		recs, _ := st.records(t)
		for a, r := range recs {
			if got, ok := m.Get(a); r.Lease.State == StateActive && (!ok || got.State != StateActive) {
				t.Errorf("seed %d: after Flush the store keeps %v active, the cache has %+v", seed, a, got)
			}
		}
		checkInvariants(t, m, st)
		if t.Failed() {
			return
		}
	}
}
