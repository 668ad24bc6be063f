package lease

import (
	"context"
	"net/netip"
	"testing"
)

func TestFreeIdentityReturnsAddressesToThePool(t *testing.T) {
	ctx := context.Background()
	m, err := New(Config{Pools: []PoolConfig{{Name: "p", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/30")}}}}, NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.Offer(ctx, Request{Identity: "alice", Session: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Accept(ctx, l.Addr, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, l.Addr, "s1", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Get(l.Addr); got.State != StateHeld {
		t.Fatalf("after release: %v", got.State)
	}
	freed, err := m.FreeIdentity(ctx, "alice", ReasonRevoked)
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 1 || freed[0].Addr != l.Addr {
		t.Fatalf("freed %v", freed)
	}
	if got, ok := m.Get(l.Addr); ok && got.State != StateFree {
		t.Fatalf("after FreeIdentity: %v", got.State)
	}
	// Alice's sticky index is gone: her next offer is not bound to the freed address.
	if _, err := m.Offer(ctx, Request{Identity: "alice", Session: "s4"}); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats()[0]; st.Held != 0 || st.Offered != 1 {
		t.Fatalf("stats after free and a new offer: %+v", st)
	}
}

func TestFreeOneHeldAddress(t *testing.T) {
	ctx := context.Background()
	m, err := New(Config{Pools: []PoolConfig{{Name: "p", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/29")}}}}, NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	l, err := m.Offer(ctx, Request{Identity: "alice", Session: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Accept(ctx, l.Addr, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(ctx, l.Addr); err != nil { // active: left alone
		t.Fatal(err)
	}
	if got, _ := m.Get(l.Addr); got.State != StateActive {
		t.Fatalf("Free changed an active lease: %v", got.State)
	}
	if err := m.Release(ctx, l.Addr, "s1", ReasonRevoked); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(ctx, l.Addr); err != nil {
		t.Fatal(err)
	}
	if got, ok := m.Get(l.Addr); ok && got.State != StateFree {
		t.Fatalf("after Free: %v", got.State)
	}
	if st := m.Stats()[0]; st.Held != 0 || st.Active != 0 {
		t.Fatalf("stats: %+v", st)
	}
}
