package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/internal/testclock"
)

func TestStateStrings(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{StateFree.String(), "free"}, {StateOffered.String(), "offered"},
		{StateActive.String(), "active"}, {StateHeld.String(), "held"},
		{EventGranted.String(), "granted"}, {EventRenewed.String(), "renewed"},
		{EventReleased.String(), "released"}, {EventExpired.String(), "expired"},
		{EventReplaced.String(), "replaced"}, {Refuse.String(), "refuse"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q want %q", tc.got, tc.want)
		}
	}
}

func TestValidIdentity(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"alice@corp", true}, {"", false}, {strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false}, {"a\nb", false}, {"a\x00", false},
		{"\xff", false}, {"a\u0085", false}, {"zoë", true},
	} {
		err := ValidIdentity(tc.id)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidIdentity)) {
			t.Errorf("ValidIdentity(%q) = %v", tc.id, err)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	p := func(name string, prefixes ...string) PoolConfig {
		pc := PoolConfig{Name: name}
		for _, s := range prefixes {
			pc.Prefixes = append(pc.Prefixes, mustPrefix(s))
		}
		return pc
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error, "" = ok
	}{
		{"ok", Config{Pools: []PoolConfig{p("a", "10.0.0.0/24"), p("b", "10.0.1.0/24")}}, ""},
		{"no pools", Config{}, "no pool"},
		{"overlap", Config{Pools: []PoolConfig{p("a", "10.0.0.0/16"), p("b", "10.0.1.0/24")}}, `pool "b" overlaps pool "a"`},
		{"self overlap", Config{Pools: []PoolConfig{p("a", "10.0.0.0/16", "10.0.1.0/24")}}, "overlaps"},
		{"dup name", Config{Pools: []PoolConfig{p("a", "10.0.0.0/24"), p("a", "10.0.1.0/24")}}, "duplicate"},
		{"ipv6", Config{Pools: []PoolConfig{p("a", "2001:db8::/64")}}, "not an IPv4 prefix"},
		{"empty", Config{Pools: []PoolConfig{{Name: "a", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/30")}, Exclude: []netip.Prefix{mustPrefix("10.0.0.0/30")}}}}, "no usable"},
		{"reservation outside", Config{Pools: []PoolConfig{p("a", "10.0.0.0/24")}, Reservations: []Reservation{{"bob", mustAddr("10.9.0.1")}}}, `reservation 10.9.0.1 for "bob" is outside every pool`},
		{"reservation excluded", Config{Pools: []PoolConfig{{Name: "a", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/24")}, ExcludeNetworkBroadcast: true}}, Reservations: []Reservation{{"bob", mustAddr("10.0.0.0")}}}, "outside every pool"},
		{"reservation dup", Config{Pools: []PoolConfig{p("a", "10.0.0.0/24")}, Reservations: []Reservation{{"bob", mustAddr("10.0.0.1")}, {"eve", mustAddr("10.0.0.1")}}}, "reserved for both"},
		{"reservation bad identity", Config{Pools: []PoolConfig{p("a", "10.0.0.0/24")}, Reservations: []Reservation{{"", mustAddr("10.0.0.1")}}}, "invalid identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, NewMemStore())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			case tc.want != "" && !errors.Is(err, ErrInvalidConfig):
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestPoolExclusions(t *testing.T) {
	m, err := New(Config{Pools: []PoolConfig{{
		Name:                    "p",
		Prefixes:                []netip.Prefix{mustPrefix("192.0.2.0/29")},
		Ranges:                  []Range{{mustAddr("198.51.100.10"), mustAddr("198.51.100.11")}},
		Exclude:                 []netip.Prefix{mustPrefix("192.0.2.1/32")},
		ExcludeNetworkBroadcast: true,
	}}}, NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Stats()[0]; s.Size != 7 || s.Free != 7 {
		t.Fatalf("stats %+v, want size 7", s)
	}
	var got []string
	for i := range 7 {
		l, err := m.Offer(context.Background(), Request{Identity: fmt.Sprint("u", i), Session: "s"})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l.Addr.String())
	}
	want := "192.0.2.2 192.0.2.3 192.0.2.4 192.0.2.5 192.0.2.6 198.51.100.10 198.51.100.11"
	if strings.Join(got, " ") != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	_, err = m.Offer(context.Background(), Request{Identity: "late", Session: "s"})
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("want ErrPoolExhausted, got %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	m, clk, st := newTestManager(t, nil)
	ctx := context.Background()
	evs, cancel := m.Subscribe(16)
	defer cancel()
	ep := mustAddr("2001:db8::1")
	l, err := m.Offer(ctx, Request{Identity: "alice", Session: "s1", Endpoint: ep, Transport: "v4dtlsv6"})
	if err != nil {
		t.Fatal(err)
	}
	if l.State != StateOffered || l.Addr != mustAddr("10.0.0.1") || l.Expires != clk.Now().Add(DefaultOfferTimeout) {
		t.Fatalf("offer %+v", l)
	}
	if _, err := m.Accept(ctx, l.Addr, "other", ""); !errors.Is(err, ErrSessionMismatch) {
		t.Fatalf("Accept other session: %v", err)
	}
	if _, err := m.Renew(ctx, l.Addr, "s1"); !errors.Is(err, ErrBadState) {
		t.Fatalf("Renew offered: %v", err)
	}
	a, err := m.Accept(ctx, l.Addr, "s1", "")
	if err != nil || a.State != StateActive || a.Endpoint != ep || a.Transport != "v4dtlsv6" {
		t.Fatalf("Accept: %+v %v", a, err)
	}
	expectEvent(t, evs, EventGranted, l.Addr)
	clk.Advance(time.Minute)
	r, err := m.Renew(ctx, l.Addr, "s1")
	if err != nil || r.Expires != clk.Now().Add(DefaultLifetime) {
		t.Fatalf("Renew: %+v %v", r, err)
	}
	expectEvent(t, evs, EventRenewed, l.Addr)
	if err := m.Release(ctx, l.Addr, "s1", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	ev := expectEvent(t, evs, EventReleased, l.Addr)
	if ev.Reason != ReasonClosed || ev.Lease.State != StateHeld {
		t.Fatalf("release event %+v", ev)
	}
	if g, ok := m.Get(l.Addr); !ok || g.State != StateHeld || g.Expires != clk.Now().Add(DefaultHoldTime) {
		t.Fatalf("Get after release: %+v %v", g, ok)
	}
	if err := m.Release(ctx, l.Addr, "s1", ReasonClosed); !errors.Is(err, ErrNotFound) {
		t.Fatalf("double release: %v", err)
	}
	if _, err := m.Accept(ctx, mustAddr("10.0.0.5"), "x", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Accept free: %v", err)
	}
	checkInvariants(t, m, st)
}

func expectEvent(t *testing.T, evs <-chan Event, kind EventKind, a netip.Addr) Event {
	t.Helper()
	select {
	case ev := <-evs:
		if ev.Kind != kind || ev.Lease.Addr != a {
			t.Fatalf("event %v %v, want %v %v", ev.Kind, ev.Lease.Addr, kind, a)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no %v event", kind)
	}
	return Event{}
}

func TestIdempotentOffer(t *testing.T) {
	m, _, _ := newTestManager(t, nil)
	ctx := context.Background()
	l := grant(t, m, "alice", "s1")
	again, err := m.Offer(ctx, Request{Identity: "alice", Session: "s1"})
	if err != nil || again != l {
		t.Fatalf("re-offer same session: %+v %v, want %+v", again, err, l)
	}
	if a, err := m.Accept(ctx, l.Addr, "s1", ""); err != nil || a != l {
		t.Fatalf("re-accept: %+v %v", a, err)
	}
}

func TestSticky(t *testing.T) {
	m, clk, st := newTestManager(t, func(c *Config) { c.HoldTime = time.Hour })
	ctx := context.Background()
	a := grant(t, m, "alice", "s1")
	b := grant(t, m, "bob", "s1")
	if err := m.Release(ctx, a.Addr, "s1", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	// Others do not get alice's held address while clean ones remain.
	for i := range 3 {
		if l := grant(t, m, fmt.Sprint("x", i), "s"); l.Addr == a.Addr {
			t.Fatalf("held address given to %s", l.Identity)
		}
	}
	if l := grant(t, m, "alice", "s2"); l.Addr != a.Addr {
		t.Fatalf("alice got %v, want her held %v", l.Addr, a.Addr)
	}
	// After the hold ends the address is free but still alice's.
	if err := m.Release(ctx, a.Addr, "s2", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if _, err := m.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Get(a.Addr); ok {
		t.Fatal("held lease not freed after HoldTime")
	}
	if l := grant(t, m, "alice", "s3"); l.Addr != a.Addr {
		t.Fatalf("alice got %v after hold, want %v", l.Addr, a.Addr)
	}
	_ = b
	checkInvariants(t, m, st)
}

func TestHeldTakenOnlyWhenExhausted(t *testing.T) {
	m, _, st := newTestManager(t, nil)
	ctx := context.Background()
	var ls []Lease
	for i := range 6 {
		ls = append(ls, grant(t, m, fmt.Sprint("u", i), "s"))
	}
	if err := m.Release(ctx, ls[2].Addr, "s", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, ls[4].Addr, "s", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	// Pool is full except two held addresses: the oldest held goes first.
	l := grant(t, m, "newcomer", "s")
	if l.Addr != ls[2].Addr {
		t.Fatalf("newcomer got %v, want oldest held %v", l.Addr, ls[2].Addr)
	}
	// u2 lost its address; it takes u4's held one, as nothing else is left.
	l2 := grant(t, m, "u2", "s2")
	if l2.Addr != ls[4].Addr {
		t.Fatalf("u2 got %v", l2.Addr)
	}
	if _, err := m.Offer(ctx, Request{Identity: "u4", Session: "s"}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("want exhausted, got %v", err)
	}
	checkInvariants(t, m, st)
	m.mu.Lock()
	if m.idents["u4"] != nil && m.idents["u4"].hasSticky(ls[4].Addr) {
		t.Error("u4 still remembers an address given away")
	}
	m.mu.Unlock()
}

func TestStaticReservation(t *testing.T) {
	res := mustAddr("10.0.0.3")
	m, _, st := newTestManager(t, func(c *Config) {
		c.Reservations = []Reservation{{Identity: "carol", Addr: res}}
	})
	ctx := context.Background()
	// Five dynamic addresses; the reserved one is never offered to others.
	for i := range 5 {
		if l := grant(t, m, fmt.Sprint("u", i), "s"); l.Addr == res {
			t.Fatalf("reserved address given to %s", l.Identity)
		}
	}
	if _, err := m.Offer(ctx, Request{Identity: "u9", Session: "s"}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("want exhausted, got %v", err)
	}
	l := grant(t, m, "carol", "s")
	if l.Addr != res || !l.Static {
		t.Fatalf("carol got %+v", l)
	}
	if err := m.Release(ctx, res, "s", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Offer(ctx, Request{Identity: "u9", Session: "s"}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("held static taken by another: %v", err)
	}
	if s := m.Stats()[0]; s.Size != 6 || s.Active != 5 || s.Held != 1 || s.Free != 0 {
		t.Fatalf("stats %+v", s)
	}
	checkInvariants(t, m, st)
}

func TestExpiry(t *testing.T) {
	m, clk, st := newTestManager(t, func(c *Config) {
		c.OfferTimeout, c.Lifetime, c.HoldTime = 10*time.Second, time.Minute, time.Hour
	})
	ctx := context.Background()
	evs, cancel := m.Subscribe(8)
	defer cancel()
	off, err := m.Offer(ctx, Request{Identity: "o", Session: "s"})
	if err != nil {
		t.Fatal(err)
	}
	act := grant(t, m, "a", "s")
	expectEvent(t, evs, EventGranted, act.Addr)
	clk.Advance(10 * time.Second)
	if n, err := m.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire offered: %d %v", n, err)
	}
	if ev := expectEvent(t, evs, EventOfferExpired, off.Addr); ev.Lease.Session != "s" || ev.Reason != ReasonNoAccept || ev.Lease.State != StateFree {
		t.Fatalf("offer-expired event %+v", ev)
	}
	if _, ok := m.Get(off.Addr); ok {
		t.Fatal("unaccepted offer (not sticky) should be free")
	}
	if _, err := m.Accept(ctx, off.Addr, "s", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Accept after timeout: %v", err)
	}
	clk.Advance(50 * time.Second)
	if n, _ := m.Expire(ctx); n != 1 {
		t.Fatalf("active lease not expired, n=%d", n)
	}
	ev := expectEvent(t, evs, EventExpired, act.Addr)
	if ev.Lease.State != StateHeld || ev.Reason != ReasonExpired {
		t.Fatalf("expired event %+v", ev)
	}
	if _, err := m.Renew(ctx, act.Addr, "s"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Renew after expiry: %v", err)
	}
	// Sticky offer that times out goes back to held.
	l, err := m.Offer(ctx, Request{Identity: "a", Session: "s2"})
	if err != nil || l.Addr != act.Addr {
		t.Fatalf("sticky re-offer %+v %v", l, err)
	}
	clk.Advance(11 * time.Second)
	if _, err := m.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	if g, ok := m.Get(act.Addr); !ok || g.State != StateHeld {
		t.Fatalf("sticky offer timeout: %+v %v", g, ok)
	}
	clk.Advance(2 * time.Hour)
	if n, _ := m.Expire(ctx); n != 1 || len(m.List()) != 0 {
		t.Fatalf("hold not expired: n=%d list=%v", n, m.List())
	}
	checkInvariants(t, m, st)
}

func TestSessionLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy LimitPolicy
		max    int
	}{
		{"replace max1", ReplaceOldest, 1},
		{"replace max2", ReplaceOldest, 2},
		{"refuse max1", Refuse, 1},
		{"refuse max2", Refuse, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, clk, st := newTestManager(t, func(c *Config) { c.OnLimit, c.MaxSessions = tc.policy, tc.max })
			ctx := context.Background()
			evs, cancel := m.Subscribe(16)
			defer cancel()
			var ls []Lease
			for i := range tc.max {
				ls = append(ls, grant(t, m, "dave", fmt.Sprint("s", i)))
				expectEvent(t, evs, EventGranted, ls[i].Addr)
				clk.Advance(time.Second)
			}
			l, err := m.Offer(ctx, Request{Identity: "dave", Session: "new"})
			if tc.policy == Refuse {
				if !errors.Is(err, ErrSessionLimit) {
					t.Fatalf("want ErrSessionLimit, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ev := expectEvent(t, evs, EventReplaced, ls[0].Addr)
			if ev.Lease.Session != "s0" || ev.Reason != ReasonReplaced {
				t.Fatalf("replaced %+v", ev)
			}
			if tc.max == 1 && l.Addr != ls[0].Addr {
				t.Fatalf("replacement should reuse the sticky address %v, got %v", ls[0].Addr, l.Addr)
			}
			// A per-request limit overrides the config.
			if _, err := m.Offer(ctx, Request{Identity: "dave", Session: "extra", MaxSessions: tc.max + 1}); err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, m, st)
		})
	}
}

func TestReleaseIdentity(t *testing.T) {
	m, _, st := newTestManager(t, func(c *Config) { c.MaxSessions = 3 })
	ctx := context.Background()
	grant(t, m, "eve", "a")
	grant(t, m, "eve", "b")
	if _, err := m.Offer(ctx, Request{Identity: "eve", Session: "c"}); err != nil {
		t.Fatal(err)
	}
	grant(t, m, "frank", "a")
	out, err := m.ReleaseIdentity(ctx, "eve", ReasonRevoked)
	if err != nil || len(out) != 3 {
		t.Fatalf("ReleaseIdentity: %v %v", out, err)
	}
	s := m.Stats()[0]
	if s.Active != 1 || s.Held != 2 || s.Offered != 0 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := m.ReleaseIdentity(ctx, "", ReasonRevoked); !errors.Is(err, ErrInvalidIdentity) {
		t.Fatal(err)
	}
	checkInvariants(t, m, st)
}

func TestRequestErrors(t *testing.T) {
	m, _, _ := newTestManager(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		r    Request
		want error
	}{
		{Request{Identity: "", Session: "s"}, ErrInvalidIdentity},
		{Request{Identity: "a\tb", Session: "s"}, ErrInvalidIdentity},
		{Request{Identity: "a", Pool: "nope", Session: "s"}, ErrUnknownPool},
	} {
		if _, err := m.Offer(ctx, tc.r); !errors.Is(err, tc.want) {
			t.Errorf("Offer(%+v) = %v, want %v", tc.r, err, tc.want)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Offer(cctx, Request{Identity: "a", Session: "s"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: %v", err)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	m, clk, st := newTestManager(t, func(c *Config) { c.MaxSessions = 2 })
	ctx := context.Background()
	a := grant(t, m, "alice", "s")
	b := grant(t, m, "bob", "s")
	if err := m.Release(ctx, b.Addr, "s", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	off, err := m.Offer(ctx, Request{Identity: "carl", Session: "s"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.cfg
	m2, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	if !equalLeases(m.List(), m2.List()) {
		t.Fatalf("reopened list differs:\n%v\n%v", m.List(), m2.List())
	}
	checkInvariants(t, m2, st)
	if l := grant(t, m2, "bob", "s2"); l.Addr != b.Addr {
		t.Fatalf("bob not sticky after reopen: %v", l.Addr)
	}
	if _, err := m2.Accept(ctx, off.Addr, "s", ""); err != nil {
		t.Fatalf("offer not accepted after reopen: %v", err)
	}
	if _, err := m2.Renew(ctx, a.Addr, "s"); err != nil {
		t.Fatal(err)
	}
	_ = clk
}

func equalLeases(a, b []Lease) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Addr != y.Addr || x.State != y.State || x.Identity != y.Identity || x.Session != y.Session || !x.Expires.Equal(y.Expires) {
			return false
		}
	}
	return true
}

func TestAddPool(t *testing.T) {
	m, _, _ := newTestManager(t, nil)
	if err := m.AddPool(PoolConfig{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.1.0.0/24")}}); err == nil {
		t.Fatal("duplicate pool accepted")
	}
	if err := m.AddPool(PoolConfig{Name: "x", Prefixes: []netip.Prefix{mustPrefix("10.0.0.4/30")}}); err == nil {
		t.Fatal("overlapping pool accepted")
	}
	if err := m.AddPool(PoolConfig{Name: "extra", Prefixes: []netip.Prefix{mustPrefix("10.1.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	l, err := m.Offer(context.Background(), Request{Identity: "a", Pool: "extra", Session: "s"})
	if err != nil || l.Addr != mustAddr("10.1.0.0") || l.Pool != "extra" {
		t.Fatalf("offer from added pool: %+v %v", l, err)
	}
}

func TestEventDrops(t *testing.T) {
	m, _, _ := newTestManager(t, func(c *Config) { c.MaxSessions = 10 })
	slow, cancelSlow := m.Subscribe(1)
	fast, cancelFast := m.Subscribe(100)
	defer cancelFast()
	for i := range 3 {
		grant(t, m, "u", fmt.Sprint(i))
	}
	if m.DroppedEvents() != 2 {
		t.Fatalf("dropped %d, want 2", m.DroppedEvents())
	}
	if len(fast) != 3 || len(slow) != 1 {
		t.Fatalf("fast %d slow %d", len(fast), len(slow))
	}
	cancelSlow()
	cancelSlow()
	<-slow
	if _, ok := <-slow; ok {
		t.Fatal("channel not closed by cancel")
	}
}

func TestRunSweeps(t *testing.T) {
	m, clk, _ := newTestManager(t, func(c *Config) { c.Lifetime = time.Minute })
	l := grant(t, m, "alice", "s")
	evs, cancel := m.Subscribe(4)
	defer cancel()
	clk.Advance(2 * time.Minute)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	expectEvent(t, evs, EventExpired, l.Addr)
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestReleaseAll(t *testing.T) {
	m, _, st := newTestManager(t, func(c *Config) { c.MaxSessions = 3 })
	ctx := context.Background()
	evs, cancel := m.Subscribe(16)
	defer cancel()
	a := grant(t, m, "alice", "s")
	b := grant(t, m, "bob", "s")
	if _, err := m.Offer(ctx, Request{Identity: "carl", Session: "s"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, b.Addr, "s", ReasonClosed); err != nil {
		t.Fatal(err)
	}
	// A restart: a new manager over the same store releases what the old
	// run left offered or active.
	m2, err := New(m.cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	evs2, cancel2 := m2.Subscribe(16)
	defer cancel2()
	n, err := m2.ReleaseAll(ctx, "restart")
	if err != nil || n != 2 {
		t.Fatalf("ReleaseAll = %d, %v; want 2", n, err)
	}
	if s := m2.Stats()[0]; s.Active != 0 || s.Offered != 0 || s.Held != 2 {
		t.Fatalf("stats after ReleaseAll %+v", s)
	}
	if l, ok := m2.Get(a.Addr); !ok || l.State != StateHeld {
		t.Fatalf("alice's lease %+v %v, want held", l, ok)
	}
	checkInvariants(t, m2, st)
	if ev := expectEvent(t, evs2, EventReleased, a.Addr); ev.Reason != "restart" {
		t.Fatalf("event %+v", ev)
	}
	expectEvent(t, evs, EventGranted, a.Addr)
	expectEvent(t, evs, EventGranted, b.Addr)
	expectEvent(t, evs, EventReleased, b.Addr)
	if n, _ := m2.ReleaseAll(ctx, "restart"); n != 0 {
		t.Fatalf("second ReleaseAll released %d", n)
	}
}

// TestExclusiveStoreKeepsOffersInMemory: with a store that is its Manager's only writer, an
// offer that changes nothing else is not committed (a crash or a restart finds the address
// as it was before), Accept commits the active lease over whatever the store had, and an
// offer that changes more than its own address is committed whole.
func TestExclusiveStoreKeepsOffersInMemory(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// setup runs before the offer of "alice" session "s2" that the test looks at.
		setup func(t *testing.T, m *Manager)
		// committed: the offer is in the store; else the store has before (nil: nothing).
		committed bool
		before    *State
	}{
		{name: "clean address", setup: func(*testing.T, *Manager) {}},
		// The release was kept in memory too: the store has the lease as accepted.
		{name: "own held address", before: ptr(StateActive), setup: func(t *testing.T, m *Manager) {
			l := grant(t, m, "alice", "s1")
			if err := m.Release(ctx, l.Addr, "s1", ReasonClosed); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "session replaced by the offer", committed: true, setup: func(t *testing.T, m *Manager) {
			grant(t, m, "alice", "s1")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			cfg := Config{Pools: []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/29")}}}, MaxSessions: 1, Now: clk.Now}
			st := exclusiveMem{NewMemStore()}
			m, err := New(cfg, st)
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(t, m)
			off, err := m.Offer(ctx, Request{Identity: "alice", Session: "s2"})
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, m, st)
			r, ok := stored(t, st, off.Addr)
			switch {
			case tc.committed:
				if !ok || r.Lease.State != StateOffered || r.Lease.Session != "s2" {
					t.Fatalf("store has %+v %v, want the offer", r, ok)
				}
			case tc.before == nil:
				if ok {
					t.Fatalf("store has %+v, want no record", r)
				}
			case !ok || r.Lease.State != *tc.before:
				t.Fatalf("store has %+v %v, want %s", r, ok, *tc.before)
			}
			// A restart (the first manager is abandoned, as by a crash) finds the store's state.
			m2, err := New(cfg, st)
			if err != nil {
				t.Fatal(err)
			}
			l, ok := m2.Get(off.Addr)
			var asStored bool
			switch {
			case tc.committed:
				asStored = ok && l.State == StateOffered && l.Session == "s2"
			case tc.before == nil:
				asStored = !ok
			default:
				asStored = ok && l.State == *tc.before
			}
			if !asStored {
				t.Fatalf("after restart %v is %+v %v", off.Addr, l, ok)
			}
			// The first manager accepts: the active lease is committed over the old record.
			act, err := m.Accept(ctx, off.Addr, "s2", "")
			if err != nil {
				t.Fatal(err)
			}
			r, ok = stored(t, st, off.Addr)
			if !ok || r.Lease.State != StateActive || r.Lease.Session != "s2" || act.State != StateActive {
				t.Fatalf("after accept the store has %+v %v", r, ok)
			}
			checkInvariants(t, m, st)
		})
	}
}

// TestExclusiveStoreKeepsReleasesInMemory: with an exclusive store a session's release is not
// committed; whatever changes the address next is committed over the active record, a restart
// holds it for the same identity, and Flush writes the hold.
func TestExclusiveStoreKeepsReleasesInMemory(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		exclusive bool
		// then runs after alice's session s1 on 10.0.0.5 (the pool's one address) was
		// released; it returns what the store must have then (nil: no record).
		then func(t *testing.T, m *Manager, clk *testclock.Clock) *Lease
	}{
		{name: "release", exclusive: true, then: func(t *testing.T, m *Manager, _ *testclock.Clock) *Lease {
			if l, _ := m.Get(mustAddr("10.0.0.5")); l.State != StateHeld {
				t.Fatalf("cache has %+v, want held", l)
			}
			return &Lease{Identity: "alice", Session: "s1", State: StateActive}
		}},
		{name: "shared store", then: func(*testing.T, *Manager, *testclock.Clock) *Lease {
			return &Lease{Identity: "alice", Session: "s1", State: StateHeld}
		}},
		{name: "hold ends", exclusive: true, then: func(t *testing.T, m *Manager, clk *testclock.Clock) *Lease {
			clk.Advance(DefaultHoldTime + time.Second)
			if n, err := m.Expire(ctx); n != 1 || err != nil {
				t.Fatalf("Expire = %d, %v", n, err)
			}
			return nil
		}},
		{name: "own offer and accept", exclusive: true, then: func(t *testing.T, m *Manager, _ *testclock.Clock) *Lease {
			if l := grant(t, m, "alice", "s2"); l.Addr != mustAddr("10.0.0.5") {
				t.Fatalf("alice got %v", l.Addr)
			}
			return &Lease{Identity: "alice", Session: "s2", State: StateActive}
		}},
		{name: "taken by another identity", exclusive: true, then: func(t *testing.T, m *Manager, _ *testclock.Clock) *Lease {
			if l := grant(t, m, "bob", "b1"); l.Addr != mustAddr("10.0.0.5") {
				t.Fatalf("bob got %v", l.Addr)
			}
			return &Lease{Identity: "bob", Session: "b1", State: StateActive}
		}},
		{name: "flushed", exclusive: true, then: func(t *testing.T, m *Manager, _ *testclock.Clock) *Lease {
			held, _ := m.Get(mustAddr("10.0.0.5"))
			if n, err := m.Flush(ctx); n != 1 || err != nil {
				t.Fatalf("Flush = %d, %v; want 1", n, err)
			}
			if n, err := m.Flush(ctx); n != 0 || err != nil {
				t.Fatalf("second Flush = %d, %v; want 0", n, err)
			}
			if r, _ := stored(t, m.store, held.Addr); !r.Lease.Expires.Equal(held.Expires) {
				t.Fatalf("flushed hold expires %v, want %v", r.Lease.Expires, held.Expires)
			}
			return &Lease{Identity: "alice", Session: "s1", State: StateHeld}
		}},
		{name: "shared store flush", then: func(t *testing.T, m *Manager, _ *testclock.Clock) *Lease {
			if n, err := m.Flush(ctx); n != 0 || err != nil {
				t.Fatalf("Flush = %d, %v; want 0", n, err)
			}
			return &Lease{Identity: "alice", Session: "s1", State: StateHeld}
		}},
		{name: "released again by ReleaseIdentity", exclusive: true, then: func(t *testing.T, m *Manager, _ *testclock.Clock) *Lease {
			grant(t, m, "alice", "s2")
			if ls, err := m.ReleaseIdentity(ctx, "alice", ReasonRevoked); len(ls) != 1 || err != nil {
				t.Fatalf("ReleaseIdentity = %v, %v", ls, err)
			}
			return &Lease{Identity: "alice", Session: "s2", State: StateHeld}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			cfg := Config{Pools: []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.5/32")}}}, MaxSessions: 1, Now: clk.Now}
			st := newStore(tc.exclusive)
			m, err := New(cfg, st)
			if err != nil {
				t.Fatal(err)
			}
			a := grant(t, m, "alice", "s1").Addr
			if err := m.Release(ctx, a, "s1", ReasonClosed); err != nil {
				t.Fatal(err)
			}
			want := tc.then(t, m, clk)
			checkInvariants(t, m, st)
			r, ok := stored(t, st, a)
			if want == nil {
				if ok {
					t.Fatalf("store has %+v, want no record", r)
				}
				return
			}
			if !ok || r.Lease.Identity != want.Identity || r.Lease.Session != want.Session || r.Lease.State != want.State {
				t.Fatalf("store has %+v %v, want %s %q %q", r.Lease, ok, want.State, want.Identity, want.Session)
			}
			// A restart (the first manager abandoned, as by a crash) holds the address for the
			// identity the store has, as the gateway does when it starts.
			m2, err := New(cfg, st)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m2.ReleaseAll(ctx, "restart"); err != nil {
				t.Fatal(err)
			}
			if l, ok := m2.Get(a); !ok || l.State != StateHeld || l.Identity != want.Identity {
				t.Fatalf("after restart %v is %+v %v, want held for %q", a, l, ok, want.Identity)
			}
			checkInvariants(t, m2, st)
		})
	}
}

// stored returns the store's record of a.
func stored(t *testing.T, st Store, a netip.Addr) (Record, bool) {
	t.Helper()
	snap, err := st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range snap.Leases {
		if r.Lease.Addr == a {
			return r, true
		}
	}
	return Record{}, false
}

func ptr[T any](v T) *T { return &v }

// TestAcceptRecordsTransport: the transport named at Accept replaces the offer's (a v4anyv6
// request becomes the transport the client chose), and an empty one keeps it.
func TestAcceptRecordsTransport(t *testing.T) {
	for _, tc := range []struct{ offered, accepted, want string }{
		{"v4anyv6", "v4tlsv6", "v4tlsv6"},
		{"v4anyv6", "v4dtlsv6", "v4dtlsv6"},
		{"v4v6", "", "v4v6"},
	} {
		t.Run(tc.offered+"/"+tc.accepted, func(t *testing.T) {
			m, _, _ := newTestManager(t, nil)
			ctx := context.Background()
			l, err := m.Offer(ctx, Request{Identity: "alice", Session: "s1", Transport: tc.offered})
			if err != nil {
				t.Fatal(err)
			}
			a, err := m.Accept(ctx, l.Addr, "s1", tc.accepted)
			if err != nil || a.Transport != tc.want {
				t.Fatalf("Accept: %+v %v, want transport %q", a, err, tc.want)
			}
			if got, _ := m.Get(l.Addr); got.Transport != tc.want {
				t.Fatalf("Get: transport %q, want %q", got.Transport, tc.want)
			}
		})
	}
}
