package lease

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"
)

// maxSticky bounds the identity index entry of one identity.
const maxSticky = 8

// Manager hands out IPv4 leases from pools. It is safe for concurrent use.
type Manager struct {
	cfg       Config
	store     Store
	exclusive bool  // see the package documentation
	batch     int   // most leases changed by one sweep's store transaction
	rev       int64 // the store revision the cache was loaded at (a Watcher's)
	events    hub
	txPool    sync.Pool // of *tx

	mu         sync.Mutex
	cond       *sync.Cond // operations waiting for any commit (anyWaiters of them)
	pools      map[string]*pool
	poolOrder  []*pool
	spans      []poolSpan // every pool address range, sorted
	slots      map[uint32]*slot
	idents     map[string]*identState
	reserved   map[uint32]string // keyed by u32(addr)
	expiry     expiryHeap
	busyAddr   map[uint32]*waitQ // keys being committed; the queue (nil: none) of those waiting
	busyIdent  map[string]*waitQ
	waitQs     []*waitQ // idle queues for reuse
	anyWaiters int
	orphans    map[netip.Addr]Record // records outside every pool (pool removed)
}

// New validates cfg and loads the leases from store.
func New(cfg Config, store Store) (*Manager, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidConfig)
	}
	m := &Manager{
		cfg:       cfg.withDefaults(),
		store:     store,
		pools:     make(map[string]*pool),
		slots:     make(map[uint32]*slot),
		idents:    make(map[string]*identState),
		reserved:  make(map[uint32]string),
		busyAddr:  make(map[uint32]*waitQ),
		busyIdent: make(map[string]*waitQ),
		orphans:   make(map[netip.Addr]Record),
	}
	if x, ok := store.(exclusiveStore); ok && x.Exclusive() {
		m.exclusive = true
	}
	m.batch = sweepBatch
	if bl, ok := store.(batchLimiter); ok {
		// Half of them: a change may bring an index change along.
		m.batch = max(1, min(sweepBatch, bl.MaxChanges()/2))
	}
	m.cond = sync.NewCond(&m.mu)
	m.txPool.New = func() any { return new(tx) }
	if len(cfg.Pools) == 0 {
		return nil, fmt.Errorf("%w: no pool", ErrInvalidConfig)
	}
	for _, pc := range cfg.Pools {
		if _, err := m.addPoolLocked(pc); err != nil {
			return nil, err
		}
	}
	if err := m.addReservations(cfg.Reservations); err != nil {
		return nil, err
	}
	snap, err := store.Load(context.Background())
	if err != nil {
		return nil, fmt.Errorf("lease: load store: %w", err)
	}
	m.load(snap)
	m.rev = snap.Revision
	return m, nil
}

func (m *Manager) addReservations(rs []Reservation) error {
	for _, r := range rs {
		if err := ValidIdentity(r.Identity); err != nil {
			return fmt.Errorf("%w: reservation %v: %w", ErrInvalidConfig, r.Addr, err)
		}
		if !r.Addr.Is4() || m.poolFor(u32(r.Addr)) == nil {
			return fmt.Errorf("%w: reservation %v for %q is outside every pool", ErrInvalidConfig, r.Addr, r.Identity)
		}
		if other, dup := m.reserved[u32(r.Addr)]; dup {
			return fmt.Errorf("%w: %v reserved for both %q and %q", ErrInvalidConfig, r.Addr, other, r.Identity)
		}
		m.reserved[u32(r.Addr)] = r.Identity
		is := m.identLocked(r.Identity)
		is.static = append(is.static, r.Addr)
	}
	for a := range m.reserved {
		m.poolFor(a).clean.remove(a)
	}
	return nil
}

// load fills the cache from a snapshot.
func (m *Manager) load(snap Snapshot) {
	taken := make(map[*pool][]span)
	m.slots = make(map[uint32]*slot, len(snap.Leases)+len(snap.Index))
	idents := make(map[string]*identState, len(snap.Index)+len(m.idents))
	maps.Copy(idents, m.idents) // the reservations' identities
	m.idents = idents
	for _, r := range snap.Leases {
		a := r.Lease.Addr
		p := m.poolFor(u32(a))
		if !a.Is4() || p == nil || !hasRecord(r.Lease.State) {
			m.orphans[a] = r
			continue
		}
		l := r.Lease
		l.Pool = p.name
		m.slots[u32(a)] = &slot{Lease: l, version: r.Version, heapIdx: -1}
		taken[p] = append(taken[p], span{u32(a), u32(a)})
	}
	for id, addrs := range snap.Index {
		var keep []netip.Addr
		for _, a := range addrs {
			if len(keep) == maxSticky {
				break
			}
			p := m.poolFor(u32(a))
			if p == nil || slices.Contains(keep, a) {
				continue
			}
			if _, res := m.reserved[u32(a)]; res {
				continue
			}
			if s := m.slots[u32(a)]; s != nil {
				if s.Identity == id {
					keep = append(keep, a)
				}
				continue
			}
			m.slots[u32(a)] = &slot{Lease: Lease{Addr: a, Pool: p.name, Identity: id}, heapIdx: -1}
			taken[p] = append(taken[p], span{u32(a), u32(a)})
			keep = append(keep, a)
		}
		if len(keep) > 0 {
			m.identLocked(id).sticky = keep
		}
	}
	for p, t := range taken {
		p.clean = newIPSet(subtract(p.clean.spans, normalize(t)))
	}
	// Attach in a stable order (oldest first) so the FIFO lists start sorted.
	all := make([]*slot, 0, len(m.slots))
	for _, s := range m.slots {
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Expires.Before(all[j].Expires) })
	for _, s := range all {
		m.attachLocked(m.poolFor(u32(s.Addr)), s)
	}
}

// AddPool adds a pool at run time (a configuration reload) and adopts the
// store's records for its addresses, releasing those of sessions of an
// earlier run as the start's ReleaseAll would have. An error wrapping
// ErrNotHeld means that the pool was added but that release failed; any
// other error, that nothing changed.
func (m *Manager) AddPool(pc PoolConfig) error {
	m.mu.Lock()
	p, err := m.addPoolLocked(pc)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	earlier := map[netip.Addr]string{} // offered or active records: address -> session
	for a, r := range m.orphans {
		if m.poolFor(u32(a)) != p {
			continue
		}
		delete(m.orphans, a)
		m.adoptLocked(a, &r)
		if (r.Lease.State == StateOffered || r.Lease.State == StateActive) && (m.exclusive || r.Lease.Owner == m.cfg.Owner) {
			earlier[a] = r.Lease.Session
		}
	}
	if len(earlier) == 0 {
		m.mu.Unlock()
		return nil
	}
	err = m.runLocked(context.Background(), func(t *tx) error {
		t.sessionRelease = true
		for a := range earlier {
			if err := t.checkAddr(a); err != nil { // never busy: nothing planned on them before
				return err
			}
		}
		for a, session := range earlier {
			s := m.slots[u32(a)]
			if s == nil || (s.State != StateOffered && s.State != StateActive) || s.Session != session {
				continue
			}
			was := s.State
			if l := t.release(s); was == StateActive {
				t.emit(EventReleased, l, ReasonRestart)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w in pool %s: %w", ErrNotHeld, pc.Name, err)
	}
	return nil
}

// Get returns the lease of addr, if it is offered, active or held.
func (m *Manager) Get(addr netip.Addr) (Lease, bool) {
	if !addr.Is4() {
		return Lease{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.slots[u32(addr)]
	if s == nil || s.State == StateFree {
		return Lease{}, false
	}
	return s.Lease, true
}

// List returns every non-free lease, sorted by address.
func (m *Manager) List() []Lease {
	m.mu.Lock()
	out := make([]Lease, 0, len(m.expiry))
	for _, s := range m.expiry {
		out = append(out, s.Lease)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// Stats returns the per-pool counters, in configuration order.
func (m *Manager) Stats() []PoolStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PoolStats, 0, len(m.poolOrder))
	for _, p := range m.poolOrder {
		out = append(out, p.stats())
	}
	return out
}

func (m *Manager) resolvePoolLocked(name, id string) (*pool, error) {
	if name == "" {
		if is := m.idents[id]; is != nil && len(is.static) > 0 {
			return m.poolFor(u32(is.static[0])), nil
		}
		return m.poolOrder[0], nil
	}
	p := m.pools[name]
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPool, name)
	}
	return p, nil
}

// now reads the clock without the monotonic reading, so cached times equal
// the ones read back from a store.
func (m *Manager) now() time.Time { return m.cfg.Now().Round(0) }
