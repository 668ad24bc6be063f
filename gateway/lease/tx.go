package lease

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// errWait tells run that a key the plan needs is being committed by
// another operation: undo, wait for it, plan again.
var errWait = errors.New("lease: key busy")

// tx is one operation in flight. Its plan changes the cache at once, marks
// every touched key busy so that no other operation plans on it, and
// collects the store Txn; if the commit fails, the undo records put the cache
// back. Only the busy marks cross the unlocked commit.
type tx struct {
	m      *Manager
	addrs  []undoAddr
	idents []undoIdent
	txn    Txn
	events []Event
	// leaseBuf backs the Change.Lease pointers of small transactions (tx
	// values are recycled: Commit does not keep the Txn).
	leaseBuf [4]Lease
	nLease   int
	wait     waitFor // what the plan found busy when it returned errWait
	// sessionRelease marks a session's release, whose active -> held change
	// an exclusive store need not write.
	sessionRelease bool
}

// waitFor names what an operation waits for after errWait: one address,
// one identity, or any commit.
type waitFor struct {
	kind  waitKind
	addr  uint32
	ident string
}

type waitKind uint8

const (
	waitAny waitKind = iota
	waitAddr
	waitIdent
)

// waitQ is the queue of operations waiting for one busy key: a commit wakes
// only those, not every waiting planner (a thundering herd when many clients
// reconnect at once).
type waitQ struct {
	cond sync.Cond
	n    int
}

func (t *tx) newLease(l Lease) *Lease {
	if t.nLease < len(t.leaseBuf) {
		p := &t.leaseBuf[t.nLease]
		t.nLease++
		*p = l
		return p
	}
	p := new(Lease) // not &l: that would move every l to the heap
	*p = l
	return p
}

func (t *tx) reset(m *Manager) {
	clear(t.addrs)
	clear(t.idents)
	clear(t.txn.Leases)
	clear(t.txn.Index)
	clear(t.events)
	t.m = m
	t.addrs, t.idents, t.events = t.addrs[:0], t.idents[:0], t.events[:0]
	t.txn.Leases, t.txn.Index = t.txn.Leases[:0], t.txn.Index[:0]
	t.leaseBuf = [4]Lease{}
	t.nLease = 0
	t.wait = waitFor{}
	t.sessionRelease = false
}

type undoAddr struct {
	p   *pool
	a   netip.Addr
	old Lease
	ver uint64
}

type undoIdent struct {
	id  string
	old []netip.Addr
}

func (t *tx) checkAddr(a netip.Addr) error {
	if t.addrBusy(a) {
		t.wait = waitFor{kind: waitAddr, addr: u32(a)}
		return errWait
	}
	return nil
}

func (t *tx) lockIdent(id string) error {
	for _, u := range t.idents {
		if u.id == id {
			return nil
		}
	}
	if _, busy := t.m.busyIdent[id]; busy {
		t.wait = waitFor{kind: waitIdent, ident: id}
		return errWait
	}
	t.m.busyIdent[id] = nil
	var old []netip.Addr
	if is := t.m.idents[id]; is != nil {
		old = is.sticky // never changed in place: no copy needed
	}
	t.idents = append(t.idents, undoIdent{id: id, old: old})
	return nil
}

func (t *tx) addrBusy(a netip.Addr) bool {
	for _, u := range t.addrs {
		if u.a == a {
			return false
		}
	}
	_, busy := t.m.busyAddr[u32(a)]
	return busy
}

func (t *tx) identBusy(id string) bool {
	for _, u := range t.idents {
		if u.id == id {
			return false
		}
	}
	_, busy := t.m.busyIdent[id]
	return busy
}

// set moves address a to nv (see Manager.setLocked) and records the store
// change. The caller must have checked that a is not busy.
func (t *tx) set(p *pool, a netip.Addr, nv Lease) {
	m := t.m
	sl := m.slots[u32(a)]
	old, ver := Lease{Addr: a, Pool: p.name}, uint64(0)
	if sl != nil {
		old, ver = sl.Lease, sl.version
	}
	first := true
	for _, u := range t.addrs {
		if u.a == a {
			first = false
		}
	}
	if first {
		m.busyAddr[u32(a)] = nil
		t.addrs = append(t.addrs, undoAddr{p: p, a: a, old: old, ver: ver})
	}
	i, seen := t.change(a)
	// ver, not old.State, says whether the store has a record: an offer kept
	// in memory is cached as offered with the store's version.
	if !seen && ver == 0 && !hasRecord(nv.State) {
		m.setSlotLocked(p, a, sl, nv, 0)
		return
	}
	if !seen {
		i = len(t.txn.Leases)
		t.txn.Leases = append(t.txn.Leases, Change{Addr: a, Prev: ver})
	}
	c := &t.txn.Leases[i]
	newVer := uint64(0)
	if !hasRecord(nv.State) {
		c.Lease = nil
	} else if c.Lease != nil {
		*c.Lease = nv
		newVer = c.Prev + 1
	} else {
		c.Lease = t.newLease(nv)
		newVer = c.Prev + 1
	}
	m.setSlotLocked(p, a, sl, nv, newVer)
}

func (t *tx) change(a netip.Addr) (int, bool) {
	for i := range t.txn.Leases {
		if t.txn.Leases[i].Addr == a {
			return i, true
		}
	}
	return 0, false
}

// setSticky replaces id's sticky list (id must be locked by this tx). The
// list is shared with the txn: sticky lists are never changed in place.
func (t *tx) setSticky(id string, list []netip.Addr) {
	is := t.m.identLocked(id)
	is.sticky = list
	t.m.gcIdentLocked(id, is)
	for i := range t.txn.Index {
		if t.txn.Index[i].Identity == id {
			t.txn.Index[i].Addrs = list
			return
		}
	}
	t.txn.Index = append(t.txn.Index, IndexChange{Identity: id, Addrs: list})
}

func (t *tx) emit(kind EventKind, l Lease, why Reason) {
	t.events = append(t.events, Event{Kind: kind, Lease: l, Reason: why})
}

func (t *tx) rollbackLocked() {
	m := t.m
	for i := len(t.addrs) - 1; i >= 0; i-- {
		u := t.addrs[i]
		m.setLocked(u.p, u.a, u.old, u.ver)
	}
	for i := len(t.idents) - 1; i >= 0; i-- {
		u := t.idents[i]
		is := m.identLocked(u.id)
		is.sticky = u.old
		m.gcIdentLocked(u.id, is)
	}
	t.events = t.events[:0]
	t.releaseLocked()
}

// releaseLocked frees the keys and wakes their waiters.
func (t *tx) releaseLocked() {
	m := t.m
	for _, u := range t.addrs {
		if q := m.busyAddr[u32(u.a)]; q != nil {
			q.cond.Broadcast()
		}
		delete(m.busyAddr, u32(u.a))
	}
	for _, u := range t.idents {
		if q := m.busyIdent[u.id]; q != nil {
			q.cond.Broadcast()
		}
		delete(m.busyIdent, u.id)
	}
	t.addrs, t.idents = t.addrs[:0], t.idents[:0]
	if m.anyWaiters > 0 {
		m.cond.Broadcast()
	}
}

// waitLocked blocks (releasing m.mu) until what w names is released: the
// busy key's queue, or any commit. Entered and left with m.mu held.
func (m *Manager) waitLocked(w waitFor) {
	var q *waitQ
	switch w.kind {
	case waitAddr:
		q = queueOf(m, m.busyAddr, w.addr)
	case waitIdent:
		q = queueOf(m, m.busyIdent, w.ident)
	default:
		m.anyWaiters++
		m.cond.Wait()
		m.anyWaiters--
		return
	}
	if q == nil {
		return
	}
	q.n++
	q.cond.Wait()
	// The key may be busy again by now with another queue; q is only ours.
	if q.n--; q.n == 0 {
		m.waitQs = append(m.waitQs, q)
	}
}

// queueOf returns the wait queue of busy key k, making one if needed, or nil
// if k is not busy (the caller then plans again; adding k would mark it busy
// for good).
func queueOf[K comparable](m *Manager, busy map[K]*waitQ, k K) *waitQ {
	q, ok := busy[k]
	if !ok {
		return nil
	}
	if q == nil {
		q = m.newWaitQ()
		busy[k] = q
	}
	return q
}

func (m *Manager) newWaitQ() *waitQ {
	if n := len(m.waitQs); n > 0 {
		q := m.waitQs[n-1]
		m.waitQs = m.waitQs[:n-1]
		return q
	}
	q := &waitQ{}
	q.cond.L = &m.mu
	return q
}

// run plans an operation under the lock, commits it without the lock, then
// publishes its events or undoes it.
func (m *Manager) run(ctx context.Context, plan func(t *tx) error) error {
	m.mu.Lock()
	return m.runLocked(ctx, plan)
}

// runLocked is run entered with m.mu held (it returns with it released):
// the first plan sees what the caller did under the lock. A store conflict
// (another writer changed a key the cache had older) has put the store's
// record in the cache: the operation is planned again on it, up to
// maxConflictRetries times.
func (m *Manager) runLocked(ctx context.Context, plan func(t *tx) error) error {
	for i := range maxConflictRetries - 1 {
		if err := m.runOnceLocked(ctx, plan); !errors.Is(err, ErrConflict) {
			return err
		}
		if i >= 2 { // let the watch catch up with the other writer
			d := conflictBackoff << min(i-2, 5)
			t := time.NewTimer(d/2 + rand.N(d/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		m.mu.Lock()
	}
	return m.runOnceLocked(ctx, plan)
}

func (m *Manager) runOnceLocked(ctx context.Context, plan func(t *tx) error) error {
	t := m.txPool.Get().(*tx)
	defer m.txPool.Put(t)
	for {
		if err := ctx.Err(); err != nil {
			m.mu.Unlock()
			return err
		}
		t.reset(m)
		err := plan(t)
		if err == errWait {
			w := t.wait
			t.rollbackLocked()
			m.waitLocked(w)
			continue
		}
		if err != nil {
			t.rollbackLocked()
			m.mu.Unlock()
			return err
		}
		return m.commit(ctx, t)
	}
}

// commit is entered with m.mu held and returns with it released.
func (m *Manager) commit(ctx context.Context, t *tx) error {
	var err error
	if m.exclusive && t.inMemoryOnly() {
		// The store keeps the Prev versions; the next change must expect them.
		for _, c := range t.txn.Leases {
			m.slots[u32(c.Addr)].version = c.Prev
		}
	} else if !t.txn.empty() {
		m.mu.Unlock()
		err = m.store.Commit(ctx, t.txn)
		m.mu.Lock()
	}
	if err != nil {
		t.rollbackLocked()
		m.adoptConflictLocked(err)
		m.mu.Unlock()
		return err
	}
	// A store that does not count said which versions it gave the keys (still busy: nobody
	// else changed these slots).
	for _, c := range t.txn.Leases {
		if c.Next == 0 || c.Lease == nil {
			continue
		}
		if s := m.slots[u32(c.Addr)]; s != nil {
			s.version = c.Next
		}
	}
	t.releaseLocked()
	m.events.publish(t.events)
	m.mu.Unlock()
	return nil
}

// inMemoryOnly reports whether an exclusive store need not see t: no index
// change, and every address went either to offered from free or from its
// identity's held lease, or (in a session's release) from active to held for
// the same identity. One change may stand for several steps (a release and a
// new offer of the address), which must be committed.
func (t *tx) inMemoryOnly() bool {
	if len(t.txn.Leases) == 0 || len(t.txn.Index) > 0 || (len(t.events) > 0 && !t.sessionRelease) {
		return false
	}
	for _, c := range t.txn.Leases {
		was, ok := t.undoOf(c.Addr)
		if !ok || c.Lease == nil {
			return false
		}
		switch c.Lease.State {
		case StateOffered:
			if was.State != StateFree && (was.State != StateHeld || was.Identity != c.Lease.Identity) {
				return false
			}
		case StateHeld:
			if !t.sessionRelease || was.State != StateActive || was.Identity != c.Lease.Identity {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func (t *tx) undoOf(a netip.Addr) (Lease, bool) {
	for _, u := range t.addrs {
		if u.a == a {
			return u.old, true
		}
	}
	return Lease{}, false
}

// adoptConflictLocked puts the store's record of a ConflictError in the
// cache: the store is the authority.
func (m *Manager) adoptConflictLocked(err error) {
	var ce *ConflictError
	if !errors.As(err, &ce) {
		return
	}
	if _, busy := m.busyAddr[u32(ce.Addr)]; busy {
		return
	}
	m.adoptLocked(ce.Addr, ce.Current)
}

func (m *Manager) adoptLocked(a netip.Addr, r *Record) {
	p := m.poolFor(u32(a))
	if p == nil {
		return
	}
	old, _ := m.valueLocked(p, a)
	nv, ver := Lease{Addr: a, Pool: p.name}, uint64(0)
	if r != nil {
		nv, ver = r.Lease, r.Version
		nv.Pool = p.name
	}
	// The index stays the identity's hint (it is a separate key): a record
	// gone makes the address sticky-free for the identity that remembers it;
	// a record of another identity takes it out of the old one's list.
	if r == nil && old.Identity != "" && m.idents[old.Identity] != nil && m.idents[old.Identity].hasSticky(a) {
		nv.Identity = old.Identity
	}
	if old.Identity != "" && old.Identity != nv.Identity {
		if is := m.idents[old.Identity]; is != nil && is.hasSticky(a) {
			is.sticky = slices.DeleteFunc(slices.Clone(is.sticky), func(x netip.Addr) bool { return x == a })
			m.gcIdentLocked(old.Identity, is)
		}
	}
	m.setLocked(p, a, nv, ver)
}
