package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"
)

// model is a deliberately naive reference of the lease semantics: a map
// per address, linear scans, no indexes. The differential test runs random
// operations on the Manager and on the model and compares the full state
// after each one.
type model struct {
	cfg      Config
	addrs    []netip.Addr // every pool address, in order
	leases   map[netip.Addr]Lease
	sticky   map[string][]netip.Addr
	reserved map[netip.Addr]string
}

func newModel(cfg Config, addrs []netip.Addr) *model {
	md := &model{cfg: cfg.withDefaults(), addrs: addrs, leases: map[netip.Addr]Lease{}, sticky: map[string][]netip.Addr{}, reserved: map[netip.Addr]string{}}
	for _, r := range cfg.Reservations {
		md.reserved[r.Addr] = r.Identity
	}
	return md
}

func (md *model) stickyHas(id string, a netip.Addr) bool { return slices.Contains(md.sticky[id], a) }

func (md *model) sessions(id string) []Lease {
	var out []Lease
	for _, l := range md.leases {
		if l.Identity == id && (l.State == StateOffered || l.State == StateActive) {
			out = append(out, l)
		}
	}
	return out
}

func (md *model) release(l Lease, now time.Time) {
	if l.State == StateOffered && !l.Static && !md.stickyHas(l.Identity, l.Addr) {
		delete(md.leases, l.Addr)
		return
	}
	l.State, l.Expires, l.Owner = StateHeld, now.Add(md.cfg.HoldTime), ""
	md.leases[l.Addr] = l
}

// usable reports whether id may get a (free or held by id).
func (md *model) usable(a netip.Addr, id string) bool {
	l, ok := md.leases[a]
	return !ok || (l.Identity == id && l.State == StateHeld)
}

// checkOffer validates the manager's answer to an offer and applies it.
func (md *model) checkOffer(r Request, now time.Time, got Lease, gotErr error) error {
	for _, l := range md.sessions(r.Identity) {
		if l.Session == r.Session {
			if gotErr != nil || got != l {
				return fmt.Errorf("idempotent offer: got %+v %v want %+v", got, gotErr, l)
			}
			return nil
		}
	}
	if ss := md.sessions(r.Identity); len(ss) >= md.cfg.MaxSessions {
		if md.cfg.OnLimit == Refuse {
			if !errors.Is(gotErr, ErrSessionLimit) {
				return fmt.Errorf("want ErrSessionLimit, got %v", gotErr)
			}
			return nil
		}
		sort.Slice(ss, func(i, j int) bool { return ss[i].Granted.Before(ss[j].Granted) })
		for _, l := range ss[:len(ss)-md.cfg.MaxSessions+1] {
			md.release(l, now)
		}
	}
	want, class := md.expectAddr(r.Identity)
	if class == "exhausted" {
		if !errors.Is(gotErr, ErrPoolExhausted) {
			return fmt.Errorf("want exhausted, got %+v %v", got, gotErr)
		}
		return nil
	}
	if gotErr != nil {
		return fmt.Errorf("offer failed: %v (model: %s %v)", gotErr, class, want)
	}
	a := got.Addr
	switch class {
	case "static", "sticky":
		if a != want[0] {
			return fmt.Errorf("%s: got %v want %v", class, a, want[0])
		}
	default:
		if !slices.Contains(want, a) {
			return fmt.Errorf("%s: got %v not among %v", class, a, want)
		}
	}
	if old, ok := md.leases[a]; ok || md.ownerOf(a) != "" {
		owner := old.Identity
		if !ok {
			owner = md.ownerOf(a)
		}
		if owner != r.Identity {
			md.sticky[owner] = slices.DeleteFunc(md.sticky[owner], func(x netip.Addr) bool { return x == a })
		}
	}
	l := Lease{Addr: a, Pool: "main", Identity: r.Identity, Session: r.Session, State: StateOffered, Owner: md.cfg.Owner,
		Static: class == "static", Granted: now, Expires: now.Add(md.cfg.OfferTimeout)}
	if got != l {
		return fmt.Errorf("offer lease %+v want %+v", got, l)
	}
	md.leases[a] = l
	return nil
}

func (md *model) ownerOf(a netip.Addr) string {
	for id, list := range md.sticky {
		if slices.Contains(list, a) {
			return id
		}
	}
	return ""
}

// expectAddr returns the acceptable addresses for a new offer and their class.
func (md *model) expectAddr(id string) ([]netip.Addr, string) {
	var static []netip.Addr
	for _, a := range md.addrs {
		if md.reserved[a] == id && md.usable(a, id) {
			static = append(static, a)
		}
	}
	if len(static) > 0 {
		return static[:1], "static"
	}
	for _, a := range md.sticky[id] {
		if md.usable(a, id) {
			return []netip.Addr{a}, "sticky"
		}
	}
	var clean, freeSticky, held []netip.Addr
	for _, a := range md.addrs {
		l, taken := md.leases[a]
		_, res := md.reserved[a]
		switch {
		case res:
		case !taken && md.ownerOf(a) == "":
			clean = append(clean, a)
		case !taken:
			freeSticky = append(freeSticky, a)
		case l.State == StateHeld:
			held = append(held, a)
		}
	}
	for _, c := range []struct {
		s    []netip.Addr
		name string
	}{{clean, "clean"}, {freeSticky, "free-sticky"}, {held, "held"}} {
		if len(c.s) > 0 {
			return c.s, c.name
		}
	}
	return nil, "exhausted"
}

func (md *model) accept(a netip.Addr, session string, now time.Time) (Lease, error) {
	l, ok := md.leases[a]
	if !ok || (l.State != StateOffered && l.State != StateActive) {
		return Lease{}, ErrNotFound
	}
	if l.Session != session {
		return Lease{}, ErrSessionMismatch
	}
	if l.State == StateActive {
		return l, nil
	}
	if !l.Static {
		list := append([]netip.Addr{a}, slices.DeleteFunc(slices.Clone(md.sticky[l.Identity]), func(x netip.Addr) bool { return x == a })...)
		for len(list) > maxSticky {
			list = list[:len(list)-1]
		}
		md.sticky[l.Identity] = list
	}
	l.State, l.Granted, l.Expires = StateActive, now, now.Add(md.cfg.Lifetime)
	md.leases[a] = l
	return l, nil
}

func (md *model) expire(now time.Time) int {
	n := 0
	for a, l := range md.leases {
		if l.Expires.After(now) {
			continue
		}
		n++
		switch l.State {
		case StateOffered:
			md.release(l, now)
		case StateActive:
			l.State, l.Expires, l.Owner = StateHeld, now.Add(md.cfg.HoldTime), ""
			md.leases[a] = l
		case StateHeld:
			delete(md.leases, a)
		}
	}
	return n
}

func (md *model) list() []Lease {
	var out []Lease
	for _, l := range md.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// TestDifferential runs 16 seeds of each; seed 13's replace-oldest run releases an offered
// session and offers its address again in one operation, which an exclusive store must
// commit.
func TestDifferential(t *testing.T) {
	for _, exclusive := range []bool{false, true} {
		for _, policy := range []LimitPolicy{ReplaceOldest, Refuse} {
			for seed := uint64(1); seed <= 16; seed++ {
				t.Run(fmt.Sprintf("%s/%s/seed%d", storeKind(exclusive), policy, seed), func(t *testing.T) { runDifferential(t, seed, policy, exclusive) })
			}
		}
	}
}

func runDifferential(t *testing.T, seed uint64, policy LimitPolicy, exclusive bool) {
	runDifferentialOn(t, seed, policy, newStore(exclusive), "", 3000)
}

// runDifferentialOn runs steps random operations on a Manager named owner
// over st (empty, and its Manager's only writer) and checks each against the
// model.
func runDifferentialOn(t *testing.T, seed uint64, policy LimitPolicy, st Store, owner string, steps int) {
	_, exclusive := st.(exclusiveStore)
	rng := rand.New(rand.NewPCG(seed, 99))
	clk := newFakeClock()
	cfg := Config{
		Pools:        []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/28")}, Exclude: []netip.Prefix{mustPrefix("10.0.0.7/32")}, ExcludeNetworkBroadcast: true}},
		Reservations: []Reservation{{Identity: "id0", Addr: mustAddr("10.0.0.9")}},
		OfferTimeout: 5 * time.Second, Lifetime: 40 * time.Second, HoldTime: 90 * time.Second,
		MaxSessions: 2, OnLimit: policy, Now: clk.Now, Owner: owner,
	}
	m, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []netip.Addr
	for a := mustAddr("10.0.0.1"); a != mustAddr("10.0.0.15"); a = a.Next() {
		if a != mustAddr("10.0.0.7") {
			addrs = append(addrs, a)
		}
	}
	md := newModel(cfg, addrs)
	ctx := context.Background()
	ids := []string{"id0", "id1", "id2", "id3", "id4", "id5", "id6", "id7", "id8", "id9", "id10", "id11", "id12", "id13", "id14", "id15"}
	pickAddr := func() netip.Addr {
		if ls := md.list(); len(ls) > 0 && rng.IntN(5) > 0 {
			return ls[rng.IntN(len(ls))].Addr
		}
		return addrs[rng.IntN(len(addrs))]
	}
	session := func() string { return fmt.Sprint("s", rng.IntN(3)) }
	for step := range steps {
		clk.Advance(time.Duration(1+rng.IntN(1500)) * time.Millisecond)
		now := clk.Now()
		var desc string
		var mismatch error
		switch op := rng.IntN(10); {
		case op < 4:
			r := Request{Identity: ids[rng.IntN(len(ids))], Session: session()}
			desc = fmt.Sprintf("Offer %+v", r)
			got, err := m.Offer(ctx, r)
			mismatch = md.checkOffer(r, now, got, err)
		case op < 7:
			a, s := pickAddr(), session()
			desc = fmt.Sprintf("Accept %v %s", a, s)
			got, err := m.Accept(ctx, a, s, "")
			want, werr := md.accept(a, s, now)
			if !errors.Is(err, werr) || got != want {
				mismatch = fmt.Errorf("got %+v %v want %+v %v", got, err, want, werr)
			}
		case op == 7:
			a, s := pickAddr(), session()
			desc = fmt.Sprintf("Release/Renew %v %s", a, s)
			l, ok := md.leases[a]
			var werr error
			switch {
			case !ok || (l.State != StateActive && l.State != StateOffered):
				werr = ErrNotFound
			case l.Session != s:
				werr = ErrSessionMismatch
			}
			if rng.IntN(2) == 0 {
				err := m.Release(ctx, a, s, ReasonClosed)
				if werr == nil {
					md.release(l, now)
				}
				if !errors.Is(err, werr) {
					mismatch = fmt.Errorf("release: %v want %v", err, werr)
				}
			} else {
				got, err := m.Renew(ctx, a, s)
				if werr == nil && l.State == StateOffered {
					werr = ErrBadState
				}
				if werr == nil {
					l.Expires = now.Add(md.cfg.Lifetime)
					md.leases[a] = l
					if got != l {
						mismatch = fmt.Errorf("renew got %+v want %+v", got, l)
					}
				}
				if !errors.Is(err, werr) {
					mismatch = fmt.Errorf("renew: %v want %v", err, werr)
				}
			}
		case op == 8:
			id := ids[rng.IntN(len(ids))]
			desc = "ReleaseIdentity " + id
			got, err := m.ReleaseIdentity(ctx, id, ReasonRevoked)
			ss := md.sessions(id)
			for _, l := range ss {
				md.release(l, now)
			}
			if err != nil || len(got) != len(ss) {
				mismatch = fmt.Errorf("got %d leases %v, want %d", len(got), err, len(ss))
			}
		default:
			desc = "Expire"
			n, err := m.Expire(ctx)
			if wn := md.expire(now); err != nil || n != wn {
				mismatch = fmt.Errorf("expired %d %v, want %d", n, err, wn)
			}
		}
		if mismatch == nil && !equalFull(m.List(), md.list()) {
			mismatch = fmt.Errorf("state differs:\n got  %v\n want %v", m.List(), md.list())
		}
		if mismatch != nil {
			t.Fatalf("step %d: %s: %v", step, desc, mismatch)
		}
		if step%500 == 0 {
			checkInvariants(t, m, st)
		}
	}
	checkInvariants(t, m, st)
	// The store alone rebuilds the same state.
	m2, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	got, want := m2.List(), md.list()
	if exclusive {
		// Offers kept in memory are gone: their addresses are as the store had them before
		// the offer (no record, or the identity's held or active lease). An offer committed with
		// other changes (a session replaced, an address taken from another identity's
		// index) is back as it was.
		offered := map[netip.Addr]Lease{}
		want = slices.DeleteFunc(want, func(l Lease) bool {
			if l.State == StateOffered {
				offered[l.Addr] = l
			}
			return l.State == StateOffered
		})
		got = slices.DeleteFunc(got, func(l Lease) bool {
			o, ok := offered[l.Addr]
			return ok && l.Identity == o.Identity && (l.State == StateHeld || l.State == StateActive || equalFull([]Lease{l}, []Lease{o}))
		})
		// A session's release kept in memory left the active lease in the store: a
		// restart (ReleaseAll) holds it for the same identity, as the release did.
		held := map[netip.Addr]Lease{}
		for _, l := range want {
			if l.State == StateHeld {
				held[l.Addr] = l
			}
		}
		for i, l := range got {
			if h, ok := held[l.Addr]; ok && l.State == StateActive && l.Identity == h.Identity {
				got[i] = h
			}
		}
	}
	if !equalFull(got, want) {
		t.Fatalf("reloaded state differs:\n got  %v\n want %v", got, want)
	}
	checkInvariants(t, m2, st)
}

// exclusiveMem is the memory store claiming to be its Manager's only writer, as boltstore
// does: the Manager then keeps offers in memory only.
type exclusiveMem struct{ Store }

func (exclusiveMem) Exclusive() bool { return true }

func newStore(exclusive bool) Store {
	if exclusive {
		return exclusiveMem{NewMemStore()}
	}
	return NewMemStore()
}

func storeKind(exclusive bool) string {
	if exclusive {
		return "exclusive"
	}
	return "shared"
}

func equalFull(a, b []Lease) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Addr != y.Addr || x.State != y.State || x.Identity != y.Identity || x.Session != y.Session || x.Owner != y.Owner ||
			x.Static != y.Static || !x.Expires.Equal(y.Expires) || !x.Granted.Equal(y.Granted) {
			return false
		}
	}
	return true
}

// TestConcurrentNoDoubleGrant runs random operations from several
// goroutines and replays the event stream (which the manager publishes in
// commit order) to prove that no address is ever active for two sessions.
func TestConcurrentNoDoubleGrant(t *testing.T) {
	for _, exclusive := range []bool{false, true} {
		t.Run(storeKind(exclusive), func(t *testing.T) { runConcurrentNoDoubleGrant(t, exclusive) })
	}
}

func runConcurrentNoDoubleGrant(t *testing.T, exclusive bool) {
	clk := newFakeClock()
	st := newStore(exclusive)
	m, err := New(Config{
		Pools:       []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/27")}}},
		MaxSessions: 2, Lifetime: time.Minute, HoldTime: 2 * time.Minute, Now: clk.Now,
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	const workers, opsPerWorker = 6, 1500
	evs, cancel := m.Subscribe(workers * opsPerWorker * 4)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var mine []Lease
			for range opsPerWorker {
				id := fmt.Sprintf("w%d-id%d", w, rng.IntN(8))
				switch rng.IntN(6) {
				case 0, 1:
					l, err := m.Offer(ctx, Request{Identity: id, Session: fmt.Sprint(rng.IntN(3))})
					if err == nil {
						if a, err := m.Accept(ctx, l.Addr, l.Session, ""); err == nil {
							mine = append(mine, a)
						}
					} else if !errors.Is(err, ErrPoolExhausted) {
						t.Error(err)
					}
				case 2:
					if len(mine) > 0 {
						l := mine[rng.IntN(len(mine))]
						_ = m.Release(ctx, l.Addr, l.Session, ReasonClosed)
					}
				case 3:
					_, _ = m.ReleaseIdentity(ctx, id, ReasonKicked)
				case 4:
					if len(mine) > 0 {
						l := mine[rng.IntN(len(mine))]
						_, _ = m.Renew(ctx, l.Addr, l.Session)
					}
				default:
					clk.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
					if _, err := m.Expire(ctx); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	if m.DroppedEvents() != 0 {
		t.Fatalf("dropped %d events", m.DroppedEvents())
	}
	active := map[netip.Addr]string{}
	n := 0
	for ev := range evs {
		n++
		key := ev.Lease.Identity + "/" + ev.Lease.Session
		switch ev.Kind {
		case EventGranted:
			if other, ok := active[ev.Lease.Addr]; ok {
				t.Fatalf("event %d: %v granted to %s while active for %s", n, ev.Lease.Addr, key, other)
			}
			active[ev.Lease.Addr] = key
		case EventReleased, EventExpired, EventReplaced:
			if active[ev.Lease.Addr] != key {
				t.Fatalf("event %d: %v %s for %s, active for %q", n, ev.Kind, ev.Lease.Addr, key, active[ev.Lease.Addr])
			}
			delete(active, ev.Lease.Addr)
		}
	}
	if n < workers*100 {
		t.Fatalf("only %d events", n)
	}
	for _, l := range m.List() {
		if l.State == StateActive && active[l.Addr] != l.Identity+"/"+l.Session {
			t.Errorf("%v active for %s/%s, events say %q", l.Addr, l.Identity, l.Session, active[l.Addr])
		}
		delete(active, l.Addr)
	}
	if len(active) != 0 {
		t.Errorf("events say active but manager does not: %v", active)
	}
	checkInvariants(t, m, st)
}

// TestSharedStoreCAS runs two managers on one store, as two gateways
// without watches would: their caches go stale, and the store's
// compare-and-swap alone must prevent double allocation.
func TestSharedStoreCAS(t *testing.T) {
	st := NewMemStore()
	cfg := Config{Pools: []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/28")}}}, MaxSessions: 4}
	a, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got := map[netip.Addr]string{}
	for i := range 16 {
		m, who := a, "a"
		if i%2 == 1 {
			m, who = b, "b"
		}
		l, err := m.Offer(ctx, Request{Identity: fmt.Sprint(who, i), Session: "s"})
		if err != nil {
			t.Fatalf("offer %d: %v", i, err)
		}
		if prev, dup := got[l.Addr]; dup {
			t.Fatalf("%v given twice (%s, %s)", l.Addr, prev, l.Identity)
		}
		got[l.Addr] = l.Identity
	}
	if _, err := a.Offer(ctx, Request{Identity: "late", Session: "s"}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("want exhausted: %v", err)
	}
}
