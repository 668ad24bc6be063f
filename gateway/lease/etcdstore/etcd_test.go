package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
	"github.com/dstmgw/dstm/gateway/lease/storetest"
)

// waitFor bounds every wait for something the cluster does on its own.
const waitFor = 15 * time.Second

type opener struct {
	c *etcdtest.Cluster
	n atomic.Int64
}

// open returns a store on a prefix of its own (an empty store), named owner.
func (o *opener) open(t *testing.T, owner string) *etcdstore.Store {
	t.Helper()
	return o.openPrefix(t, fmt.Sprintf("/t%d/", o.n.Add(1)), owner)
}

func (o *opener) openPrefix(t *testing.T, prefix, owner string) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: o.c.Endpoints(), Prefix: prefix, Owner: owner, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStoreContract(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	storetest.Run(t, func(t *testing.T) lease.Store { return o.open(t, "gw1") })
}

func clientLeaseID(id int64) clientv3.LeaseID { return clientv3.LeaseID(id) }

func managerConfig(owner string) lease.Config {
	return lease.Config{
		Pools:        []lease.PoolConfig{{Name: "main", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/28")}, ExcludeNetworkBroadcast: true}},
		OfferTimeout: 10 * time.Second, Lifetime: time.Hour, HoldTime: time.Hour,
		MaxSessions: 1, Owner: owner,
	}
}

// gateway is a Manager following its store, as a gateway runs it.
type gateway struct {
	st     *etcdstore.Store
	m      *lease.Manager
	events <-chan lease.Event
	stop   func()
}

func startGateway(t *testing.T, st *etcdstore.Store, owner string) *gateway {
	t.Helper()
	m, err := lease.New(managerConfig(owner), st)
	if err != nil {
		t.Fatal(err)
	}
	ch, unsub := m.Subscribe(64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Follow(ctx) }()
	g := &gateway{st: st, m: m, events: ch}
	var once sync.Once
	g.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("follow %s: %v", owner, err)
			}
			unsub()
		})
	}
	t.Cleanup(g.stop)
	return g
}

func (g *gateway) connect(t *testing.T, id, session string) lease.Lease {
	t.Helper()
	ctx := context.Background()
	l, err := g.m.Offer(ctx, lease.Request{Identity: id, Session: session})
	if err != nil {
		t.Fatal(err)
	}
	if l, err = g.m.Accept(ctx, l.Addr, session, "v4v6"); err != nil {
		t.Fatal(err)
	}
	return l
}

// eventually polls cond (the cluster acts on its own clock) until waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func nextEvent(t *testing.T, ch <-chan lease.Event, want lease.EventKind) lease.Event {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case ev := <-ch:
			if ev.Kind == want {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event within %v", want, waitFor)
		}
	}
}

// TestWatchKeepsCachesCurrent: what one gateway grants, the other sees; a
// client that reconnects to the other gateway gets the same address.
func TestWatchKeepsCachesCurrent(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	a := startGateway(t, o.openPrefix(t, "/w/", "gw-a"), "gw-a")
	b := startGateway(t, o.openPrefix(t, "/w/", "gw-b"), "gw-b")
	l := a.connect(t, "alice", "s1")
	eventually(t, "gw-b sees alice's lease", func() bool {
		got, ok := b.m.Get(l.Addr)
		return ok && got.State == lease.StateActive && got.Owner == "gw-a" && got.Session == "s1"
	})
	// alice closes on a and reconnects to b: same address.
	if err := a.m.Release(context.Background(), l.Addr, "s1", lease.ReasonClosed); err != nil {
		t.Fatal(err)
	}
	eventually(t, "gw-b sees the release", func() bool {
		got, ok := b.m.Get(l.Addr)
		return ok && got.State == lease.StateHeld
	})
	l2 := b.connect(t, "alice", "s2")
	if l2.Addr != l.Addr || l2.Owner != "gw-b" {
		t.Fatalf("reconnect on gw-b got %v (owner %s), want %v", l2.Addr, l2.Owner, l.Addr)
	}
	// Everyone else gets other addresses, whichever gateway they use.
	seen := map[netip.Addr]string{l.Addr: "alice"}
	for i := range 6 {
		g := a
		if i%2 == 1 {
			g = b
		}
		id := fmt.Sprint("user", i)
		got := g.connect(t, id, "s")
		if prev, dup := seen[got.Addr]; dup {
			t.Fatalf("%v given to %s and %s", got.Addr, prev, id)
		}
		seen[got.Addr] = id
	}
}

// TestRemoteReleaseEndsSession: a revocation enforced on another gateway
// ends the session here (EventReleased, ReasonRemote).
func TestRemoteReleaseEndsSession(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	a := startGateway(t, o.openPrefix(t, "/r/", "gw-a"), "gw-a")
	b := startGateway(t, o.openPrefix(t, "/r/", "gw-b"), "gw-b")
	l := a.connect(t, "bob", "s1")
	eventually(t, "gw-b sees bob's lease", func() bool { _, ok := b.m.Get(l.Addr); return ok })
	start := time.Now()
	if _, err := b.m.ReleaseIdentity(context.Background(), "bob", lease.ReasonRevoked); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, a.events, lease.EventReleased)
	if ev.Lease.Session != "s1" || ev.Reason != lease.ReasonRemote || ev.Lease.Addr != l.Addr {
		t.Fatalf("event %+v", ev)
	}
	t.Logf("release on gw-b reached gw-a's session in %v", time.Since(start))
}

// TestDeadGatewayLeasesHeld: a gateway dies without a word; when its
// ownership lease expires its sessions' addresses are held for their
// identities and the survivor gives them back.
func TestDeadGatewayLeasesHeld(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	stA := o.openPrefix(t, "/d/", "gw-a")
	a := startGateway(t, stA, "gw-a")
	b := startGateway(t, o.openPrefix(t, "/d/", "gw-b"), "gw-b")
	l := a.connect(t, "carol", "s1")
	eventually(t, "gw-b sees carol's lease", func() bool { _, ok := b.m.Get(l.Addr); return ok })
	a.stop()
	etcdstore.Abandon(stA) // as kill -9: no revoke, the lease expires after its TTL
	eventually(t, "carol's address held on gw-b", func() bool {
		got, ok := b.m.Get(l.Addr)
		return ok && got.State == lease.StateHeld && got.Identity == "carol" && got.Owner == ""
	})
	// The held record is in etcd, not only in gw-b's cache (where it shows while committed).
	eventually(t, "the held record in etcd", func() bool {
		snap, err := b.st.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range snap.Leases {
			if r.Lease.Addr == l.Addr {
				return r.Lease.State == lease.StateHeld && r.Lease.Identity == "carol"
			}
		}
		return false
	})
	if got := b.connect(t, "carol", "s2"); got.Addr != l.Addr {
		t.Fatalf("carol got %v on gw-b, want %v", got.Addr, l.Addr)
	}
}

// TestOwnershipLostEndsSessions: this gateway's ownership lease ends (here
// revoked, as etcd does when keep-alives stop arriving): its sessions get
// EventReleased with ReasonOwnership, and it takes a new lease for new ones.
func TestOwnershipLostEndsSessions(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	st := o.openPrefix(t, "/o/", "gw-a")
	a := startGateway(t, st, "gw-a")
	l := a.connect(t, "dave", "s1")
	lost := st.Lost()
	id, _, _ := st.Ownership()
	if _, err := st.Client().Revoke(context.Background(), clientLeaseID(id)); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, a.events, lease.EventReleased)
	if ev.Lease.Session != "s1" || ev.Reason != lease.ReasonOwnership {
		t.Fatalf("event %+v", ev)
	}
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("Lost not closed")
	}
	eventually(t, "a new ownership lease", func() bool { nid, _, ok := st.Ownership(); return ok && nid != id })
	eventually(t, "dave's address held", func() bool {
		got, ok := a.m.Get(l.Addr)
		return ok && got.State == lease.StateHeld
	})
	if got := a.connect(t, "dave", "s2"); got.Addr != l.Addr {
		t.Fatalf("dave got %v, want %v", got.Addr, l.Addr)
	}
}

// TestNoDoubleAllocation races two gateways for a small pool: every
// address ends with at most one identity, in the store and in both caches.
func TestNoDoubleAllocation(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	gws := []*gateway{
		startGateway(t, o.openPrefix(t, "/n/", "gw-a"), "gw-a"),
		startGateway(t, o.openPrefix(t, "/n/", "gw-b"), "gw-b"),
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := map[netip.Addr]string{}
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 10 {
				id := fmt.Sprintf("u%d-%d", i, j)
				ctx := context.Background()
				l, err := gws[i].m.Offer(ctx, lease.Request{Identity: id, Session: "s"})
				if errors.Is(err, lease.ErrPoolExhausted) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := gws[i].m.Accept(ctx, l.Addr, "s", ""); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := granted[l.Addr]; dup {
					t.Errorf("%v granted to %s and %s", l.Addr, prev, id)
				}
				granted[l.Addr] = id
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(granted) != 14 { // a /28 without network and broadcast, 20 asking
		t.Errorf("%d addresses granted, want 14", len(granted))
	}
	snap, err := gws[0].st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range snap.Leases {
		if granted[r.Lease.Addr] != r.Lease.Identity {
			t.Errorf("store: %v for %s, granted to %s", r.Lease.Addr, r.Lease.Identity, granted[r.Lease.Addr])
		}
	}
	for _, g := range gws {
		eventually(t, "caches agree with the store", func() bool {
			for a, id := range granted {
				if l, ok := g.m.Get(a); !ok || l.Identity != id {
					return false
				}
			}
			return true
		})
	}
}

// TestMemberLoss: with one of three members stopped, commits go on.
func TestMemberLoss(t *testing.T) {
	c := etcdtest.Start(t, 3)
	o := &opener{c: c}
	a := startGateway(t, o.openPrefix(t, "/m/", "gw-a"), "gw-a")
	a.connect(t, "erin", "s1")
	c.Stop(0)
	a.connect(t, "frank", "s1")
}

// TestReservationClusterWide: a static reservation (the same policy on every gateway) is
// given to its identity on any gateway and to nobody else on any of them.
func TestReservationClusterWide(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	reserved := netip.MustParseAddr("10.9.0.5")
	start := func(owner string) *gateway {
		cfg := managerConfig(owner)
		cfg.Pools[0].Prefixes = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/29")} // .1 to .6
		cfg.Reservations = []lease.Reservation{{Identity: "printer", Addr: reserved}}
		m, err := lease.New(cfg, o.openPrefix(t, "/res/", owner))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Follow(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return &gateway{m: m}
	}
	a, b := start("gw-a"), start("gw-b")
	// Everyone else takes the rest of the pool, from both gateways.
	for i := range 5 {
		g := a
		if i%2 == 1 {
			g = b
		}
		if l := g.connect(t, fmt.Sprint("user", i), "s"); l.Addr == reserved {
			t.Fatalf("user%d got the reserved address", i)
		}
	}
	if _, err := a.m.Offer(context.Background(), lease.Request{Identity: "user9", Session: "s"}); !errors.Is(err, lease.ErrPoolExhausted) {
		t.Fatalf("a sixth user: %v, want the pool exhausted (the reserved address is not for it)", err)
	}
	if l := b.connect(t, "printer", "s"); l.Addr != reserved || !l.Static {
		t.Fatalf("the printer got %+v on gw-b, want its reservation %v", l, reserved)
	}
}

// TestNameInUse: a second live gateway with the same name is refused; a gateway restarted
// after a kill gets its name back once its previous run's lease has expired.
func TestNameInUse(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	first := o.openPrefix(t, "/name/", "gw-a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: o.c.Endpoints(), Prefix: "/name/", Owner: "gw-a", TTL: 2 * time.Second})
	if !errors.Is(err, etcdstore.ErrNameInUse) {
		t.Fatalf("a second gw-a: %v, want ErrNameInUse", err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("refused after %v, before the TTL could let a previous run's name go", d)
	}
	etcdstore.Abandon(first) // as kill -9
	again := o.openPrefix(t, "/name/", "gw-a")
	if _, _, ok := again.Ownership(); !ok {
		t.Fatal("the restarted gw-a has no ownership")
	}
}

// TestNoABAAfterRecreate: a gateway whose cache lags (its watch has not delivered yet) holds
// an offer at some version; another gateway deletes that record and creates a new one for
// someone else. The lagging gateway's accept must not pass for the new record: versions are
// revisions, which a recreated key never repeats.
func TestNoABAAfterRecreate(t *testing.T) {
	o := &opener{c: etcdtest.Start(t, 1)}
	cfg := func(owner string) lease.Config {
		c := managerConfig(owner)
		c.Pools[0].Prefixes = []netip.Prefix{netip.MustParsePrefix("10.9.0.7/32")}
		c.Pools[0].ExcludeNetworkBroadcast = false
		return c
	}
	ma, err := lease.New(cfg("gw-a"), o.openPrefix(t, "/aba/", "gw-a")) // no Follow: it lags
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	offer, err := ma.Offer(ctx, lease.Request{Identity: "ida", Session: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	stb := o.openPrefix(t, "/aba/", "gw-b")
	mb, err := lease.New(cfg("gw-b"), stb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mb.ReleaseIdentity(ctx, "ida", lease.ReasonRevoked); err != nil {
		t.Fatal(err)
	}
	jo, err := mb.Offer(ctx, lease.Request{Identity: "jay", Session: "s9"})
	if err != nil || jo.Addr != offer.Addr {
		t.Fatalf("jay's offer %+v, %v; want %v", jo, err, offer.Addr)
	}
	if l, err := ma.Accept(ctx, offer.Addr, "s1", ""); err == nil {
		t.Fatalf("the lagging gateway accepted over jay's offer: %+v", l)
	}
	snap, err := stb.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Leases) != 1 || snap.Leases[0].Lease.Identity != "jay" || snap.Leases[0].Lease.State != lease.StateOffered {
		t.Fatalf("store %+v, want jay's offer", snap.Leases)
	}
}
