package lease

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

func TestFreeTwoSessions(t *testing.T) {
	ctx := context.Background()
	m, err := New(Config{MaxSessions: 4, Pools: []PoolConfig{{Name: "p", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/29")}}}}, NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	var ls []Lease
	for _, s := range []string{"s1", "s2"} {
		l, err := m.Offer(ctx, Request{Identity: "alice", Session: s})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Accept(ctx, l.Addr, s); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	if err := m.Release(ctx, ls[0].Addr, "s1", ReasonRevoked); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(ctx, ls[0].Addr); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Offer(ctx, Request{Identity: "alice", Session: "s3"}); err != nil {
		t.Fatal(err)
	}
	// Invalid addresses are refused, never a panic under the manager's lock.
	var zero netip.Addr
	if err := m.Free(ctx, zero); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Free(zero) = %v", err)
	}
	if err := m.Release(ctx, zero, "s1", ReasonClosed); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Release(zero) = %v", err)
	}
	if _, err := m.Accept(ctx, netip.MustParseAddr("2001:db8::1"), "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Accept(v6) = %v", err)
	}
	if _, err := m.Renew(ctx, zero, "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Renew(zero) = %v", err)
	}
	if _, err := m.Get(zero); err {
		t.Fatal("Get(zero) found something")
	}
}
