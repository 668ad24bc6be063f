package lease

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

func TestFreeIdentityReturnsAddressesToThePool(t *testing.T) {
	ctx := context.Background()
	m, _, st := newTestManager(t, nil)
	l := grant(t, m, "alice", "s1")
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
	if got, ok := m.Get(l.Addr); ok {
		t.Fatalf("after FreeIdentity: %v", got.State)
	}
	// Alice's sticky index is gone: her next offer is not bound to the freed address.
	if _, err := m.Offer(ctx, Request{Identity: "alice", Session: "s2"}); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats()[0]; s.Held != 0 || s.Offered != 1 {
		t.Fatalf("stats after free and a new offer: %+v", s)
	}
	checkInvariants(t, m, st)
}

func TestFreeOneHeldAddress(t *testing.T) {
	ctx := context.Background()
	m, _, st := newTestManager(t, func(c *Config) { c.MaxSessions = 4 })
	a := grant(t, m, "alice", "s1")
	b := grant(t, m, "alice", "s2")
	if err := m.Free(ctx, a.Addr); err != nil { // active: left alone
		t.Fatal(err)
	}
	if got, _ := m.Get(a.Addr); got.State != StateActive {
		t.Fatalf("Free changed an active lease: %v", got.State)
	}
	if err := m.Release(ctx, a.Addr, "s1", ReasonRevoked); err != nil {
		t.Fatal(err)
	}
	if err := m.Free(ctx, a.Addr); err != nil {
		t.Fatal(err)
	}
	if got, ok := m.Get(a.Addr); ok {
		t.Fatalf("after Free: %v", got.State)
	}
	if got, _ := m.Get(b.Addr); got.State != StateActive {
		t.Fatalf("the other session's lease changed: %v", got.State)
	}
	checkInvariants(t, m, st)
}

// Invalid addresses are refused, never a panic under the manager's lock.
func TestInvalidAddressesRefused(t *testing.T) {
	ctx := context.Background()
	m, _, _ := newTestManager(t, nil)
	var zero netip.Addr
	v6 := netip.MustParseAddr("2001:db8::1")
	if err := m.Free(ctx, zero); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Free(zero) = %v", err)
	}
	if err := m.Release(ctx, zero, "s1", ReasonClosed); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Release(zero) = %v", err)
	}
	if _, err := m.Accept(ctx, v6, "s1", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Accept(v6) = %v", err)
	}
	if _, err := m.Renew(ctx, zero, "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Renew(zero) = %v", err)
	}
	if _, ok := m.Get(zero); ok {
		t.Fatal("Get(zero) found something")
	}
}
