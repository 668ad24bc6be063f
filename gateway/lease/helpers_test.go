package lease

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/dstmgw/dstm/internal/testclock"
)

func newFakeClock() *testclock.Clock {
	return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

// newTestManager returns a manager over a small pool with a fake clock.
func newTestManager(t testing.TB, mod func(*Config)) (*Manager, *testclock.Clock, Store) {
	t.Helper()
	clk := newFakeClock()
	cfg := Config{
		Pools: []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/29")}, ExcludeNetworkBroadcast: true}},
		Now:   clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	st := NewMemStore()
	m, err := New(cfg, st)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, clk, st
}

// grant offers and accepts.
func grant(t testing.TB, m *Manager, id, session string) Lease {
	t.Helper()
	ctx := context.Background()
	l, err := m.Offer(ctx, Request{Identity: id, Session: session})
	if err != nil {
		t.Fatalf("Offer(%s,%s): %v", id, session, err)
	}
	l, err = m.Accept(ctx, l.Addr, session, "")
	if err != nil {
		t.Fatalf("Accept(%s,%s): %v", id, session, err)
	}
	return l
}

// checkInvariants compares the cache's counters and indexes with each
// other and with the store.
func checkInvariants(t testing.TB, m *Manager, st Store) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.poolOrder {
		var off, act, held, sticky int
		for _, s := range m.slots {
			if s.Pool != p.name {
				continue
			}
			switch s.State {
			case StateOffered:
				off++
			case StateActive:
				act++
			case StateHeld:
				held++
			case StateFree:
				sticky++
				if is := m.idents[s.Identity]; is == nil || !is.hasSticky(s.Addr) {
					t.Errorf("sticky-free %v of %q not in its index", s.Addr, s.Identity)
				}
			}
			if p.clean.contains(u32(s.Addr)) {
				t.Errorf("%v has a slot and is clean", s.Addr)
			}
		}
		if off != p.offered || act != p.active || held != p.heldN || sticky != p.freeSticky.n {
			t.Errorf("pool %s counters: have %d/%d/%d/%d want %d/%d/%d/%d", p.name, p.offered, p.active, p.heldN, p.freeSticky.n, off, act, held, sticky)
		}
		reservedFree := 0
		for a := range m.reserved {
			if m.poolFor(a) == p && m.slots[a] == nil {
				reservedFree++
			}
		}
		if got := p.clean.len() + uint64(sticky+off+act+held+reservedFree); got != p.size {
			t.Errorf("pool %s: clean %d + slots + reserved free = %d, size %d", p.name, p.clean.len(), got, p.size)
		}
	}
	for id, is := range m.idents {
		for _, a := range is.sticky {
			if s := m.slots[u32(a)]; s == nil || s.Identity != id {
				t.Errorf("index of %q names %v which is not its", id, a)
			}
		}
	}
	if len(m.busyAddr)+len(m.busyIdent) != 0 {
		t.Errorf("busy keys left: %v %v", m.busyAddr, m.busyIdent)
	}
	for i, s := range m.expiry {
		if s.heapIdx != i {
			t.Errorf("expiry heap: %v at %d has index %d", s.Addr, i, s.heapIdx)
		}
		if i > 0 && s.Expires.Before(m.expiry[(i-1)/2].Expires) {
			t.Errorf("expiry heap: %v at %d expires before its parent", s.Addr, i)
		}
		if s.State == StateFree {
			t.Errorf("expiry heap holds free %v", s.Addr)
		}
	}
	if st == nil {
		return
	}
	snap, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	inStore := 0
	for _, r := range snap.Leases {
		s := m.slots[u32(r.Lease.Addr)]
		same := s != nil && s.version == r.Version && s.Identity == r.Lease.Identity
		// With an exclusive store, an offer kept in memory sits over the record
		// the store had (the identity's held lease, or its active lease whose
		// release was kept in memory), and a release kept in memory over the
		// active lease.
		inMemory := same && m.exclusive && (s.State == StateOffered && (r.Lease.State == StateHeld || r.Lease.State == StateActive) ||
			s.State == StateHeld && r.Lease.State == StateActive)
		if !inMemory && (!same || s.State != r.Lease.State || s.Session != r.Lease.Session) {
			t.Errorf("store record %v v%d %s %q differs from cache %+v", r.Lease.Addr, r.Version, r.Lease.State, r.Lease.Identity, s)
		}
		inStore++
	}
	noRecord := 0 // offers kept in memory over no record
	for _, s := range m.expiry {
		if s.version == 0 {
			noRecord++
			if !m.exclusive || s.State != StateOffered {
				t.Errorf("%v is %s with no store record", s.Addr, s.State)
			}
		}
	}
	if inStore != len(m.expiry)-noRecord {
		t.Errorf("store has %d records, cache %d leases (%d offers in memory only)", inStore, len(m.expiry), noRecord)
	}
}
