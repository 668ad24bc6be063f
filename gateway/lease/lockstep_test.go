package lease

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/internal/testclock"
)

// An exclusive and a shared manager run the same random operations in lockstep: their
// answers, events and caches must be the same after every step, their stores may differ only
// by what the exclusive one keeps in memory (offers, sessions' releases), and a crash of
// either (New on a copy of its store, then ReleaseAll as the gateway does) must give the same
// leases, except for the hold times of releases kept in memory (which count from the restart)
// and for offers.

var errInjected = errors.New("injected store failure")

// lockstepSeeds runs TestExclusiveSharedLockstep over more seeds (go test -args -lockstep.seeds=200).
var lockstepSeeds = flag.Int("lockstep.seeds", 0, "seeds per mode and policy of TestExclusiveSharedLockstep (0: a few)")

// twinStore is a memory store that says whether it is exclusive, loads its records in
// address order (so that two stores with the same content load the same cache), and fails
// the next commit when armed.
type twinStore struct {
	mem       *memStore
	exclusive bool

	mu       sync.Mutex
	failNext bool
	failed   bool // the armed failure was used
	commits  int
}

func newTwinStore(exclusive bool, mem *memStore) *twinStore {
	if mem == nil {
		mem = NewMemStore().(*memStore)
	}
	return &twinStore{mem: mem, exclusive: exclusive}
}

func (s *twinStore) Exclusive() bool { return s.exclusive }

func (s *twinStore) Load(ctx context.Context) (Snapshot, error) {
	snap, err := s.mem.Load(ctx)
	sort.Slice(snap.Leases, func(i, j int) bool { return snap.Leases[i].Lease.Addr.Less(snap.Leases[j].Lease.Addr) })
	return snap, err
}

func (s *twinStore) Commit(ctx context.Context, txn Txn) error {
	s.mu.Lock()
	s.commits++
	if s.failNext {
		s.failNext, s.failed = false, true
		s.mu.Unlock()
		return errInjected
	}
	s.mu.Unlock()
	return s.mem.Commit(ctx, txn)
}

func (s *twinStore) arm(fail bool) {
	s.mu.Lock()
	s.failNext, s.failed = fail, false
	s.mu.Unlock()
}

// disarm reports whether the armed failure was used.
func (s *twinStore) disarm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = false
	return s.failed
}

// clone copies the content (records with their versions, index) into a new store.
func (s *twinStore) clone(t testing.TB, exclusive bool) *twinStore {
	t.Helper()
	snap, err := s.mem.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := NewMemStore().(*memStore)
	for _, r := range snap.Leases {
		c.byAddr[u32(r.Lease.Addr)] = c.slotLocked(r)
	}
	for id, addrs := range snap.Index {
		c.index[id] = addrs
	}
	return newTwinStore(exclusive, c)
}

func (s *twinStore) records(t testing.TB) (map[netip.Addr]Record, map[string][]netip.Addr) {
	t.Helper()
	snap, err := s.mem.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[netip.Addr]Record, len(snap.Leases))
	for _, r := range snap.Leases {
		out[r.Lease.Addr] = r
	}
	return out, snap.Index
}

type twin struct {
	m      *Manager
	st     *twinStore
	evs    <-chan Event
	cancel func()
}

func newTwin(t testing.TB, cfg Config, st *twinStore) twin {
	t.Helper()
	m, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	evs, cancel := m.Subscribe(1 << 16)
	return twin{m: m, st: st, evs: evs, cancel: cancel}
}

// drain returns the events published since the last call, sorted (operations on several
// addresses may publish ties in heap order, which two loads of one store need not share).
func (tw twin) drain() []string {
	var out []string
	for {
		select {
		case ev := <-tw.evs:
			out = append(out, fmt.Sprintf("%s %+v %s", ev.Kind, ev.Lease, ev.Reason))
		default:
			sort.Strings(out)
			return out
		}
	}
}

type lockstepRun struct {
	t      *testing.T
	cfg    Config
	clk    *testclock.Clock
	rng    *rand.Rand
	ex, sh twin
	ids    []string
	addrs  []netip.Addr
	// restarts: real restarts (crash or graceful) continue the run; only with a pool large
	// enough that held and free-sticky addresses are never taken, whose order after a load
	// depends on map iteration.
	restarts bool
	failRate int // percent of operations whose first commit fails
	step     int
	desc     string
	stats    map[string]int
}

func (r *lockstepRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("step %d (%s): %s", r.step, r.desc, fmt.Sprintf(format, args...))
}

// do runs f on both managers, the exclusive one first; an armed failure hits the first commit
// of the exclusive manager, and the shared one's first commit only if the exclusive one made
// one (the shared store commits everything the exclusive one does, and more).
func (r *lockstepRun) do(desc string, f func(m *Manager) string) {
	r.t.Helper()
	r.desc = desc
	fail := r.failRate > 0 && r.rng.IntN(100) < r.failRate
	r.ex.st.arm(fail)
	exCommits := r.ex.st.commits
	gotEx := f(r.ex.m)
	exFailed := r.ex.st.disarm()
	exCommitted := r.ex.st.commits > exCommits
	r.sh.st.arm(exFailed)
	shCommits := r.sh.st.commits
	gotSh := f(r.sh.m)
	shFailed := r.sh.st.disarm()
	shCommitted := r.sh.st.commits > shCommits
	if exFailed {
		r.stats["failed commits"]++
	}
	if exCommitted && !shCommitted {
		r.fatalf("the exclusive store got a commit, the shared one none")
	}
	if !exCommitted && shCommitted && !exFailed {
		r.stats["kept in memory"]++
	}
	if exFailed != shFailed {
		r.fatalf("injected failure used by exclusive %v, shared %v", exFailed, shFailed)
	}
	if gotEx != gotSh {
		r.fatalf("answers differ:\n exclusive %s\n shared    %s", gotEx, gotSh)
	}
	if e, s := r.ex.drain(), r.sh.drain(); !slices.Equal(e, s) {
		r.fatalf("events differ:\n exclusive %v\n shared    %v", e, s)
	}
	r.compareCaches()
	r.compareStores()
}

func leasesString(ls []Lease) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%+v\n", l)
	}
	return b.String()
}

func (r *lockstepRun) compareCaches() {
	r.t.Helper()
	if e, s := leasesString(r.ex.m.List()), leasesString(r.sh.m.List()); e != s {
		r.fatalf("caches differ:\n exclusive\n%s shared\n%s", e, s)
	}
	if e, s := stickyOf(r.ex.m), stickyOf(r.sh.m); e != s {
		r.fatalf("sticky indexes differ:\n exclusive %s\n shared    %s", e, s)
	}
}

func stickyOf(m *Manager) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id, is := range m.idents {
		if len(is.sticky) > 0 {
			ids = append(ids, fmt.Sprintf("%s:%v", id, is.sticky))
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, " ")
}

func indexString(ix map[string][]netip.Addr) string {
	var ids []string
	for id, l := range ix {
		if len(l) > 0 {
			ids = append(ids, fmt.Sprintf("%s:%v", id, l))
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, " ")
}

// sameButState reports whether a and b are the same lease but for State and Expires.
func sameButState(a, b Lease) bool {
	a.State, a.Expires, b.State, b.Expires = 0, time.Time{}, 0, time.Time{}
	return a == b
}

// compareStores checks that the exclusive store differs from the shared one only by what is
// kept in memory: an offer (over no record, or over the identity's held or active record) and
// a session's release (the active record under a held cache entry).
func (r *lockstepRun) compareStores() {
	r.t.Helper()
	exR, exIx := r.ex.st.records(r.t)
	shR, shIx := r.sh.st.records(r.t)
	if e, s := indexString(exIx), indexString(shIx); e != s {
		r.fatalf("store indexes differ:\n exclusive %s\n shared    %s", e, s)
	}
	live := map[netip.Addr]Lease{}
	for _, l := range r.ex.m.List() {
		live[l.Addr] = l
	}
	for _, a := range r.addrs {
		e, eok := exR[a]
		s, sok := shR[a]
		l, lok := live[a]
		switch {
		case !sok && !eok:
			continue
		case !sok:
			r.fatalf("%v: the exclusive store has %+v, the shared one (and the cache: %+v %v) nothing", a, e.Lease, l, lok)
		case lok && l.State == StateOffered && s.Lease == l:
			// An offer kept in memory: the exclusive store has what the address was before it.
			// An offer committed with other changes is in both.
			if eok && e.Lease != l && (e.Lease.Identity != l.Identity || (e.Lease.State != StateHeld && e.Lease.State != StateActive)) {
				r.fatalf("%v: offered in memory over %+v", a, e.Lease)
			}
			if eok && e.Lease != l {
				r.stats["offer over a record"]++
			}
		case !eok:
			r.fatalf("%v: the shared store has %+v, the exclusive one nothing", a, s.Lease)
		case e.Lease == s.Lease:
		case lok && l.State == StateHeld && s.Lease == l && e.Lease.State == StateActive && sameButState(e.Lease, l):
			r.stats["release in memory"]++
		default:
			r.fatalf("%v: exclusive store %+v, shared %+v, cache %+v %v", a, e.Lease, s.Lease, l, lok)
		}
	}
}

// crashCheck restarts copies of both stores as the gateway does (New, ReleaseAll) and
// compares the results; the running managers are not touched.
func (r *lockstepRun) crashCheck() {
	r.t.Helper()
	ctx := context.Background()
	now := r.clk.Now()
	live := map[netip.Addr]Lease{}
	for _, l := range r.ex.m.List() {
		live[l.Addr] = l
	}
	exRecs, _ := r.ex.st.records(r.t)
	exC, shC := r.ex.st.clone(r.t, true), r.sh.st.clone(r.t, false)
	restart := func(st *twinStore) (*Manager, map[netip.Addr]Lease, int) {
		m, err := New(r.cfg, st)
		if err != nil {
			r.fatalf("restart: %v", err)
		}
		n, err := m.ReleaseAll(ctx, "restart")
		if err != nil {
			r.fatalf("restart: ReleaseAll: %v", err)
		}
		checkInvariants(r.t, m, st)
		out := map[netip.Addr]Lease{}
		for _, l := range m.List() {
			out[l.Addr] = l
		}
		return m, out, n
	}
	exM, exL, _ := restart(exC)
	shM, shL, _ := restart(shC)
	if r.t.Failed() {
		r.fatalf("invariants after a restart")
	}
	if e, s := stickyOf(exM), stickyOf(shM); e != s {
		r.fatalf("after a crash the sticky indexes differ:\n exclusive %s\n shared    %s", e, s)
	}
	for _, a := range r.addrs {
		e, eok := exL[a]
		s, sok := shL[a]
		l, lok := live[a]
		for _, x := range []struct {
			l  Lease
			ok bool
		}{{e, eok}, {s, sok}} {
			if x.ok && x.l.State != StateHeld {
				r.fatalf("after a crash %v is %s", a, x.l.State)
			}
		}
		if lok && l.State == StateOffered {
			// The shared store had the offer (held by ReleaseAll, or freed when not the
			// identity's), the exclusive one what was there before the offer.
			for _, x := range []struct {
				l  Lease
				ok bool
			}{{e, eok}, {s, sok}} {
				if x.ok && x.l.Identity != l.Identity {
					r.fatalf("after a crash the offered %v (%+v) is %+v", a, l, x.l)
				}
			}
			continue
		}
		switch {
		case !eok && !sok:
		case eok != sok:
			r.fatalf("after a crash %v is %+v %v (exclusive) and %+v %v (shared); cache was %+v %v", a, e, eok, s, sok, l, lok)
		case e == s:
		case lok && l.State == StateHeld && exRecs[a].Lease.State == StateActive && sameButState(e, s) && e.Expires.Equal(now.Add(r.cfg.HoldTime)):
			// A release kept in memory: held again from the restart.
			r.stats["crash: hold restarted"]++
		default:
			r.fatalf("after a crash %v is %+v (exclusive) and %+v (shared); cache was %+v", a, e, s, l)
		}
	}
	r.stats["crash checks"]++
}

// flush does what the gateway does after its ReleaseAll at shutdown: Flush writes what the
// exclusive store kept in memory, after which both stores must hold the same leases, unless
// ReleaseAll failed (an injected failure) and left offers, which only the shared store has.
func (r *lockstepRun) flush() {
	r.t.Helper()
	ctx := context.Background()
	r.desc = "Flush"
	if _, err := r.ex.m.Flush(ctx); err != nil {
		r.fatalf("Flush: %v", err)
	}
	if n, err := r.sh.m.Flush(ctx); n != 0 || err != nil {
		r.fatalf("Flush of the shared manager = %d, %v", n, err)
	}
	r.compareCaches()
	r.compareStores()
	if slices.ContainsFunc(r.ex.m.List(), func(l Lease) bool { return l.State == StateOffered || l.State == StateActive }) {
		return
	}
	exRecs, _ := r.ex.st.records(r.t)
	shRecs, _ := r.sh.st.records(r.t)
	if len(exRecs) != len(shRecs) {
		r.fatalf("after Flush the exclusive store has %d records, the shared one %d", len(exRecs), len(shRecs))
	}
	for a, e := range exRecs {
		if e.Lease != shRecs[a].Lease {
			r.fatalf("after Flush %v is %+v (exclusive) and %+v (shared)", a, e.Lease, shRecs[a].Lease)
		}
	}
	r.stats["flushed"]++
}

// restart restarts both managers for real and goes on with them, both loaded from the
// exclusive store's content (after the comparison with the shared store's own restart).
func (r *lockstepRun) restart(graceful bool) {
	r.t.Helper()
	ctx := context.Background()
	if graceful {
		r.do("ReleaseAll shutdown", func(m *Manager) string {
			n, err := m.ReleaseAll(ctx, "shutdown")
			return fmt.Sprint(n, err)
		})
		r.flush()
	}
	r.crashCheck()
	r.ex.cancel()
	r.sh.cancel()
	shSt := r.ex.st.clone(r.t, false)
	r.ex = newTwin(r.t, r.cfg, r.ex.st)
	r.sh = newTwin(r.t, r.cfg, shSt)
	r.desc = "restart"
	r.do("ReleaseAll restart", func(m *Manager) string {
		n, err := m.ReleaseAll(ctx, "restart")
		return fmt.Sprint(n, err)
	})
	checkInvariants(r.t, r.ex.m, r.ex.st)
	checkInvariants(r.t, r.sh.m, r.sh.st)
	r.stats["restarts"]++
}

func (r *lockstepRun) pickAddr() (netip.Addr, string) {
	ls := r.ex.m.List()
	if len(ls) > 0 && r.rng.IntN(6) > 0 {
		l := ls[r.rng.IntN(len(ls))]
		if r.rng.IntN(4) > 0 {
			return l.Addr, l.Session
		}
		return l.Addr, fmt.Sprint("s", r.rng.IntN(3))
	}
	return r.addrs[r.rng.IntN(len(r.addrs))], fmt.Sprint("s", r.rng.IntN(3))
}

func (r *lockstepRun) stepOnce() {
	ctx := context.Background()
	rng := r.rng
	r.clk.Advance(time.Duration(1+rng.IntN(1500)) * time.Millisecond)
	switch op := rng.IntN(100); {
	case op < 28:
		req := Request{Identity: r.ids[rng.IntN(len(r.ids))], Session: fmt.Sprint("s", rng.IntN(3)), Transport: "v4v6"}
		if rng.IntN(4) == 0 {
			req.Pool = "extra"
		}
		if rng.IntN(3) == 0 {
			req.MaxSessions = 1 + rng.IntN(3)
		}
		r.do(fmt.Sprintf("Offer %+v", req), func(m *Manager) string {
			l, err := m.Offer(ctx, req)
			return fmt.Sprintf("%+v %v", l, err)
		})
	case op < 50:
		a, s := r.pickAddr()
		r.do(fmt.Sprintf("Accept %v %s", a, s), func(m *Manager) string {
			l, err := m.Accept(ctx, a, s, "")
			return fmt.Sprintf("%+v %v", l, err)
		})
	case op < 64:
		a, s := r.pickAddr()
		r.do(fmt.Sprintf("Release %v %s", a, s), func(m *Manager) string {
			return fmt.Sprint(m.Release(ctx, a, s, ReasonClosed))
		})
	case op < 70:
		a, s := r.pickAddr()
		r.do(fmt.Sprintf("Renew %v %s", a, s), func(m *Manager) string {
			l, err := m.Renew(ctx, a, s)
			return fmt.Sprintf("%+v %v", l, err)
		})
	case op < 74:
		id := r.ids[rng.IntN(len(r.ids))]
		r.do("ReleaseIdentity "+id, func(m *Manager) string {
			ls, err := m.ReleaseIdentity(ctx, id, ReasonRevoked)
			sort.Slice(ls, func(i, j int) bool { return ls[i].Addr.Less(ls[j].Addr) })
			return fmt.Sprintf("%+v %v", ls, err)
		})
	case op < 76:
		id := r.ids[rng.IntN(len(r.ids))]
		r.do("FreeIdentity "+id, func(m *Manager) string {
			ls, err := m.FreeIdentity(ctx, id, ReasonRevoked)
			sort.Slice(ls, func(i, j int) bool { return ls[i].Addr.Less(ls[j].Addr) })
			return fmt.Sprintf("%+v %v", ls, err)
		})
	case op < 79:
		a, _ := r.pickAddr()
		r.do(fmt.Sprintf("Free %v", a), func(m *Manager) string { return fmt.Sprint(m.Free(ctx, a)) })
	case op < 96:
		if rng.IntN(8) == 0 {
			r.clk.Advance(time.Duration(rng.IntN(100)) * time.Second)
		}
		r.do("Expire", func(m *Manager) string {
			n, err := m.Expire(ctx)
			return fmt.Sprint(n, err)
		})
	default:
		if r.restarts {
			r.restart(op%2 == 0)
			return
		}
		// A graceful stop without restarting: every session is held (and committed).
		r.do("ReleaseAll", func(m *Manager) string {
			n, err := m.ReleaseAll(ctx, "shutdown")
			return fmt.Sprint(n, err)
		})
	}
}

func runLockstep(t *testing.T, seed uint64, policy LimitPolicy, roomy bool, failRate, steps int) map[string]int {
	clk := newFakeClock()
	main, extra := "10.0.0.0/28", "10.0.1.0/30"
	nIDs := 12
	if roomy {
		main, extra, nIDs = "10.0.0.0/25", "10.0.1.0/28", 6
	}
	cfg := Config{
		Pools: []PoolConfig{
			{Name: "main", Prefixes: []netip.Prefix{mustPrefix(main)}, Exclude: []netip.Prefix{mustPrefix("10.0.0.7/32")}, ExcludeNetworkBroadcast: true},
			{Name: "extra", Prefixes: []netip.Prefix{mustPrefix(extra)}, ExcludeNetworkBroadcast: true},
		},
		Reservations: []Reservation{{Identity: "id0", Addr: mustAddr("10.0.0.9")}, {Identity: "id1", Addr: mustAddr("10.0.1.1")}, {Identity: "id2", Addr: mustAddr("10.0.0.3")}},
		OfferTimeout: 5 * time.Second, Lifetime: 40 * time.Second, HoldTime: 90 * time.Second,
		MaxSessions: 2, OnLimit: policy, Now: clk.Now,
	}
	r := &lockstepRun{t: t, cfg: cfg, clk: clk, rng: rand.New(rand.NewPCG(seed, 0x5eed)), restarts: roomy, failRate: failRate, stats: map[string]int{}}
	for i := range nIDs {
		r.ids = append(r.ids, fmt.Sprint("id", i))
	}
	for _, pfx := range []string{main, extra} {
		p := mustPrefix(pfx)
		for a := p.Addr(); p.Contains(a); a = a.Next() {
			r.addrs = append(r.addrs, a)
		}
	}
	r.ex = newTwin(t, cfg, newTwinStore(true, nil))
	r.sh = newTwin(t, cfg, newTwinStore(false, nil))
	defer func() { r.ex.cancel(); r.sh.cancel() }()
	for r.step = 0; r.step < steps; r.step++ {
		r.stepOnce()
		if r.step%7 == 0 {
			r.crashCheck()
		}
		if r.step%100 == 0 {
			checkInvariants(t, r.ex.m, r.ex.st)
			checkInvariants(t, r.sh.m, r.sh.st)
			if t.Failed() {
				r.fatalf("invariants")
			}
		}
	}
	r.crashCheck()
	checkInvariants(t, r.ex.m, r.ex.st)
	checkInvariants(t, r.sh.m, r.sh.st)
	return r.stats
}

// TestExclusiveSharedLockstep: see the top of the file. Tight: a small pool (addresses taken
// from other identities, exhaustion), copies of the stores crashed every 7 steps. Roomy: real
// crashes and graceful restarts that the run goes on from. Failing: one operation in 8 has its
// first commit fail.
func TestExclusiveSharedLockstep(t *testing.T) {
	seeds, steps := uint64(4), 1000
	if testing.Short() {
		seeds, steps = 2, 400
	}
	if *lockstepSeeds > 0 {
		seeds, steps = uint64(*lockstepSeeds), 1500
	}
	total := map[string]int{}
	var mu sync.Mutex
	for _, mode := range []struct {
		name     string
		roomy    bool
		failRate int
	}{{"tight", false, 0}, {"roomy", true, 0}, {"tight-failing", false, 12}, {"roomy-failing", true, 12}} {
		for _, policy := range []LimitPolicy{ReplaceOldest, Refuse} {
			for seed := uint64(1); seed <= seeds; seed++ {
				t.Run(fmt.Sprintf("%s/%s/seed%d", mode.name, policy, seed), func(t *testing.T) {
					st := runLockstep(t, seed, policy, mode.roomy, mode.failRate, steps)
					mu.Lock()
					for k, v := range st {
						total[k] += v
					}
					mu.Unlock()
				})
			}
		}
	}
	t.Logf("coverage: %v", total)
	// The run must have exercised what it is about.
	for _, k := range []string{"release in memory", "crash: hold restarted", "offer over a record", "failed commits", "restarts", "kept in memory", "flushed"} {
		if total[k] == 0 && !t.Failed() {
			t.Errorf("no %q in any run", k)
		}
	}
}

// flakyStore fails about one commit in failEvery, from any goroutine.
type flakyStore struct {
	*twinStore
	mu        sync.Mutex
	rng       *rand.Rand
	failEvery int
	failures  int
}

func (s *flakyStore) Commit(ctx context.Context, txn Txn) error {
	s.mu.Lock()
	fail := s.rng.IntN(s.failEvery) == 0
	if fail {
		s.failures++
	}
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.twinStore.Commit(ctx, txn)
}

// TestExclusiveConcurrentCrash: sessions released, offered, accepted and expired from
// several goroutines on an exclusive store whose commits sometimes fail; then the cache must
// still sit over the store as checkInvariants allows, and a crash must give back every lease
// the cache had (held for its identity), and nothing else but the addresses of offers.
func TestExclusiveConcurrentCrash(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			clk := newFakeClock()
			cfg := Config{
				Pools:       []PoolConfig{{Name: "main", Prefixes: []netip.Prefix{mustPrefix("10.0.0.0/27")}, ExcludeNetworkBroadcast: true}},
				MaxSessions: 2, Lifetime: time.Minute, HoldTime: 2 * time.Minute, OfferTimeout: 10 * time.Second, Now: clk.Now,
			}
			st := &flakyStore{twinStore: newTwinStore(true, nil), rng: rand.New(rand.NewPCG(seed, 3)), failEvery: 10}
			m, err := New(cfg, st)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var wg sync.WaitGroup
			for w := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(w)))
					var mine []Lease
					for range 1500 {
						id := fmt.Sprintf("id%d", rng.IntN(20))
						switch rng.IntN(8) {
						case 0, 1, 2:
							l, err := m.Offer(ctx, Request{Identity: id, Session: fmt.Sprint(w, rng.IntN(3))})
							if err == nil && rng.IntN(4) > 0 {
								if a, err := m.Accept(ctx, l.Addr, l.Session, ""); err == nil {
									mine = append(mine, a)
								}
							}
						case 3, 4:
							if len(mine) > 0 {
								i := rng.IntN(len(mine))
								_ = m.Release(ctx, mine[i].Addr, mine[i].Session, ReasonClosed)
								mine = slices.Delete(mine, i, i+1)
							}
						case 5:
							if rng.IntN(4) == 0 {
								_, _ = m.ReleaseIdentity(ctx, id, ReasonKicked)
							} else if len(mine) > 0 {
								l := mine[rng.IntN(len(mine))]
								_, _ = m.Renew(ctx, l.Addr, l.Session)
							}
						default:
							clk.Advance(time.Duration(rng.IntN(4000)) * time.Millisecond)
							_, _ = m.Expire(ctx)
						}
					}
				}()
			}
			wg.Wait()
			checkInvariants(t, m, st.twinStore)
			live := map[netip.Addr]Lease{}
			for _, l := range m.List() {
				live[l.Addr] = l
			}
			m2, err := New(cfg, st.twinStore.clone(t, true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m2.ReleaseAll(ctx, "restart"); err != nil {
				t.Fatal(err)
			}
			after := map[netip.Addr]Lease{}
			for _, l := range m2.List() {
				after[l.Addr] = l
				if b, ok := live[l.Addr]; !ok || b.Identity != l.Identity || l.State != StateHeld {
					t.Errorf("after a crash %v is %+v; before it %+v %v", l.Addr, l, b, ok)
				}
			}
			for a, l := range live {
				if _, ok := after[a]; !ok && l.State != StateOffered {
					t.Errorf("after a crash %v (%+v) is free", a, l)
				}
			}
			if st.failures == 0 || len(live) == 0 {
				t.Errorf("%d failures, %d leases: the run tested little", st.failures, len(live))
			}
		})
	}
}
