package lease

import (
	"container/heap"
	"net/netip"
)

// slot is the cached state of one address that is not clean: a lease that
// is offered, active or held, or a free address still remembered by its
// identity (State free, Identity set: "sticky-free").
type slot struct {
	Lease
	version uint64 // store version of the address key (0: no record)
	heapIdx int    // index in the expiry heap, -1 when not in it
	prev    *slot  // neighbours in pool.freeSticky or pool.held
	next    *slot
	list    *slotList
}

func hasRecord(s State) bool { return s != StateFree }

type slotList struct {
	head, tail *slot
	n          int
}

func (l *slotList) pushBack(s *slot) {
	s.list, s.prev, s.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = s
	} else {
		l.head = s
	}
	l.tail = s
	l.n++
}

func (l *slotList) remove(s *slot) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		l.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next, s.list = nil, nil, nil
	l.n--
}

// expiryHeap orders offered, active and held slots by Expires. A timer per
// lease would cost a runtime timer each, fire outside the manager's lock and
// ignore the injected clock; a timer wheel needs buckets for 24 h holds. The
// heap costs one pointer and one int per lease, and a renewal is a Fix.
type expiryHeap []*slot

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].Expires.Before(h[j].Expires) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *expiryHeap) Push(x any) {
	s := x.(*slot)
	s.heapIdx = len(*h)
	*h = append(*h, s)
}

func (h *expiryHeap) Pop() any {
	old := *h
	n := len(old) - 1
	s := old[n]
	old[n] = nil
	s.heapIdx = -1
	*h = old[:n]
	return s
}

type identState struct {
	sticky   []netip.Addr // addresses used, most recent first (the persisted index)
	sessions []*slot      // offered and active leases
	static   []netip.Addr // reservations from the config
}

func (is *identState) empty() bool {
	return len(is.sticky) == 0 && len(is.sessions) == 0 && len(is.static) == 0
}

func (is *identState) hasSticky(a netip.Addr) bool {
	for _, s := range is.sticky {
		if s == a {
			return true
		}
	}
	return false
}

func (is *identState) dropSession(s *slot) {
	for i, x := range is.sessions {
		if x == s {
			is.sessions = append(is.sessions[:i], is.sessions[i+1:]...)
			return
		}
	}
}

// detachLocked removes s from every structure of its current state, except
// the expiry heap when keepHeap is set (attachLocked then fixes its place).
func (m *Manager) detachLocked(p *pool, s *slot, keepHeap bool) {
	if s.heapIdx >= 0 && !keepHeap {
		heap.Remove(&m.expiry, s.heapIdx)
	}
	if s.list != nil {
		s.list.remove(s)
	}
	switch s.State {
	case StateOffered, StateActive:
		if is := m.idents[s.Identity]; is != nil {
			is.dropSession(s)
			m.gcIdentLocked(s.Identity, is)
		}
		if s.State == StateOffered {
			p.offered--
		} else {
			p.active--
		}
	case StateHeld:
		p.heldN--
	}
}

func (m *Manager) attachLocked(p *pool, s *slot) {
	switch s.State {
	case StateFree:
		p.freeSticky.pushBack(s)
		return
	case StateOffered, StateActive:
		is := m.identLocked(s.Identity)
		is.sessions = append(is.sessions, s)
		if s.State == StateOffered {
			p.offered++
		} else {
			p.active++
		}
	case StateHeld:
		p.heldN++
		if _, reserved := m.reserved[u32(s.Addr)]; !reserved {
			p.held.pushBack(s)
		}
	}
	if s.heapIdx >= 0 {
		heap.Fix(&m.expiry, s.heapIdx) // kept by detachLocked: one sift instead of a remove and a push
		return
	}
	heap.Push(&m.expiry, s)
}

func (m *Manager) identLocked(id string) *identState {
	is := m.idents[id]
	if is == nil {
		is = &identState{}
		m.idents[id] = is
	}
	return is
}

func (m *Manager) gcIdentLocked(id string, is *identState) {
	if is.empty() {
		delete(m.idents, id)
	}
}

// valueLocked returns the lease and version of address a; a clean or
// reserved free address has State free and no Identity.
func (m *Manager) valueLocked(p *pool, a netip.Addr) (Lease, uint64) {
	if s := m.slots[u32(a)]; s != nil {
		return s.Lease, s.version
	}
	return Lease{Addr: a, Pool: p.name}, 0
}

// setLocked moves address a to nv with version ver, keeping every index
// consistent. A free lease without identity has no slot.
func (m *Manager) setLocked(p *pool, a netip.Addr, nv Lease, ver uint64) {
	m.setSlotLocked(p, a, m.slots[u32(a)], nv, ver)
}

// setSlotLocked is setLocked with s = m.slots[u32(a)] already looked up.
func (m *Manager) setSlotLocked(p *pool, a netip.Addr, s *slot, nv Lease, ver uint64) {
	reserved := false
	if len(m.reserved) > 0 {
		_, reserved = m.reserved[u32(a)]
	}
	if s != nil {
		// A slot that stays in the heap is fixed in place (attachLocked).
		m.detachLocked(p, s, nv.State != StateFree)
	} else if !reserved {
		p.clean.remove(u32(a))
	}
	if nv.State == StateFree && nv.Identity == "" {
		if s != nil {
			delete(m.slots, u32(a))
		}
		if !reserved {
			p.clean.add(u32(a))
		}
		return
	}
	if s == nil {
		s = &slot{heapIdx: -1}
		m.slots[u32(a)] = s
	}
	s.Lease, s.version = nv, ver
	m.attachLocked(p, s)
}
