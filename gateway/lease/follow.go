package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// resyncBackoff bounds the wait between failed loads after ErrResync.
const resyncBackoff = 2 * time.Second

// Follow keeps the cache current with a shared store (a Watcher) until ctx
// ends, and returns nil then; with any other store it only waits for ctx.
//
// Changes of other gateways are adopted as conflicts are: the store is the
// authority. A session of this gateway whose lease another gateway changed
// (a revocation or session limit enforced there), or whose record the store
// deleted with this gateway's ownership, gets EventReleased. An active
// record deleted with its owner's ownership (a dead gateway) is written back
// as held for its identity, so that the identity finds it on any gateway.
func (m *Manager) Follow(ctx context.Context) error {
	w, ok := m.store.(Watcher)
	if !ok {
		<-ctx.Done()
		return nil
	}
	from := m.rev
	apply := func(us []Update) { m.apply(ctx, us) }
	for {
		err := w.Watch(ctx, from, apply)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, ErrResync) {
			return fmt.Errorf("lease: follow the store: %w", err)
		}
		snap, err := m.loadRetrying(ctx)
		if err != nil {
			return nil // ctx ended
		}
		m.resync(ctx, snap)
		from = snap.Revision
	}
}

func (m *Manager) loadRetrying(ctx context.Context) (Snapshot, error) {
	wait := 100 * time.Millisecond
	for {
		snap, err := m.store.Load(ctx)
		if err == nil {
			return snap, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Snapshot{}, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, resyncBackoff)
	}
}

// resync makes the cache equal to snap, as updates, so that sessions that
// lost their lease meanwhile get their events.
func (m *Manager) resync(ctx context.Context, snap Snapshot) {
	us := make([]Update, 0, len(snap.Leases)+len(snap.Index))
	inSnap := make(map[netip.Addr]bool, len(snap.Leases))
	for i := range snap.Leases {
		r := &snap.Leases[i]
		inSnap[r.Lease.Addr] = true
		us = append(us, Update{Addr: r.Lease.Addr, Record: r})
	}
	for id, addrs := range snap.Index {
		us = append(us, Update{Identity: id, Addrs: addrs})
	}
	m.mu.Lock()
	for _, s := range m.slots {
		if s.version != 0 && !inSnap[s.Addr] {
			us = append(us, Update{Addr: s.Addr, Revision: snap.Revision})
		}
	}
	for a := range m.orphans {
		if !inSnap[a] {
			us = append(us, Update{Addr: a})
		}
	}
	for id, is := range m.idents {
		if _, ok := snap.Index[id]; !ok && len(is.sticky) > 0 {
			us = append(us, Update{Identity: id})
		}
	}
	m.mu.Unlock()
	m.apply(ctx, us)
}

// apply adopts the updates of a Watcher in order.
func (m *Manager) apply(ctx context.Context, us []Update) {
	var orphaned []Lease
	m.mu.Lock()
	var evs []Event
	for i := range us {
		u := &us[i]
		if u.Identity != "" {
			for m.isBusyIdent(u.Identity) {
				m.waitLocked(waitFor{kind: waitIdent, ident: u.Identity})
			}
			m.adoptIndexLocked(u.Identity, u.Addrs)
			continue
		}
		a := u.Addr
		p := m.poolFor(u32(a))
		if !a.Is4() || p == nil {
			if u.Record == nil {
				delete(m.orphans, a)
			} else {
				m.orphans[a] = *u.Record
			}
			continue
		}
		for m.isBusyAddr(a) {
			m.waitLocked(waitFor{kind: waitAddr, addr: u32(a)})
		}
		if m.staleLocked(a, u) {
			continue
		}
		old, _ := m.valueLocked(p, a)
		m.adoptLocked(a, u.Record)
		if ev, lost := m.lostLocked(old, u); lost {
			evs = append(evs, ev)
		}
		if u.Orphaned && u.Prev != nil && u.Prev.Lease.State == StateActive && u.Prev.Lease.Addr == a {
			orphaned = append(orphaned, u.Prev.Lease)
		}
	}
	m.events.publish(evs)
	m.mu.Unlock()
	if len(orphaned) > 0 {
		m.holdOrphaned(ctx, orphaned)
	}
}

// staleLocked reports whether the cache has u or something newer already: a Watcher's
// versions are store revisions, which only grow (this process's own writes come back as
// updates too, and a snapshot replayed after ErrResync may be older than the cache).
func (m *Manager) staleLocked(a netip.Addr, u *Update) bool {
	s := m.slots[u32(a)]
	if s == nil || s.version == 0 {
		return false
	}
	if u.Record != nil {
		return u.Record.Version <= s.version
	}
	return u.Revision != 0 && uint64(u.Revision) < s.version
}

func (m *Manager) isBusyAddr(a netip.Addr) bool {
	_, busy := m.busyAddr[u32(a)]
	return busy
}

func (m *Manager) isBusyIdent(id string) bool {
	_, busy := m.busyIdent[id]
	return busy
}

// lostLocked returns the event of a session of this gateway whose lease u
// took away (old is the cached lease before u).
func (m *Manager) lostLocked(old Lease, u *Update) (Event, bool) {
	if (old.State != StateOffered && old.State != StateActive) || old.Owner != m.cfg.Owner {
		return Event{}, false
	}
	l := old
	l.State, l.Owner = StateFree, ""
	if r := u.Record; r != nil {
		if r.Lease.Session == old.Session && (r.Lease.State == StateOffered || r.Lease.State == StateActive) {
			return Event{}, false
		}
		l.State, l.Expires = r.Lease.State, r.Lease.Expires
	}
	why := ReasonRemote
	if u.Record == nil && u.Orphaned {
		why = ReasonOwnership
	}
	return Event{Kind: EventReleased, Lease: l, Reason: why}, true
}

// adoptIndexLocked makes addrs the sticky list of id, as load does.
func (m *Manager) adoptIndexLocked(id string, addrs []netip.Addr) {
	is := m.identLocked(id)
	keep := make([]netip.Addr, 0, min(len(addrs), maxSticky))
	for _, a := range addrs {
		if len(keep) == maxSticky {
			break
		}
		if !a.Is4() || m.poolFor(u32(a)) == nil || slices.Contains(keep, a) {
			continue
		}
		if _, res := m.reserved[u32(a)]; res {
			continue
		}
		if s := m.slots[u32(a)]; s != nil && s.State != StateFree && s.Identity != id {
			continue
		}
		keep = append(keep, a)
	}
	for _, a := range is.sticky {
		if slices.Contains(keep, a) || m.isBusyAddr(a) {
			continue
		}
		if s := m.slots[u32(a)]; s != nil && s.State == StateFree && s.Identity == id {
			p := m.poolFor(u32(a))
			m.setLocked(p, a, Lease{Addr: a, Pool: p.name}, 0)
		}
	}
	for _, a := range keep {
		if m.isBusyAddr(a) {
			continue
		}
		if s := m.slots[u32(a)]; s == nil || (s.State == StateFree && s.Identity != id) {
			p := m.poolFor(u32(a))
			m.setLocked(p, a, Lease{Addr: a, Pool: p.name, Identity: id}, 0)
		}
	}
	if len(keep) == 0 {
		keep = nil
	}
	is.sticky = keep
	m.gcIdentLocked(id, is)
}

// holdOrphaned writes the active leases of a gateway that lost its
// ownership back as held for their identities, unless someone claimed the
// address meanwhile. Gateways race to do it; the store lets one win.
func (m *Manager) holdOrphaned(ctx context.Context, ls []Lease) {
	for len(ls) > 0 {
		batch := ls[:min(len(ls), m.batch)]
		ls = ls[len(batch):]
		// On failure (the store unreachable) the addresses stay sticky-free
		// for their identities: they still get them back unless the pool
		// runs out first.
		_ = m.run(ctx, func(t *tx) error {
			for _, l := range batch {
				if err := t.checkAddr(l.Addr); err != nil {
					return err
				}
			}
			now := m.now()
			for _, l := range batch {
				p := m.poolFor(u32(l.Addr))
				if p == nil {
					continue
				}
				if s := m.slots[u32(l.Addr)]; s != nil && (s.State != StateFree || s.Identity != l.Identity) {
					continue
				}
				if id, res := m.reserved[u32(l.Addr)]; res && id != l.Identity {
					continue
				}
				nv := l
				nv.Pool, nv.Owner, nv.State, nv.Expires = p.name, "", StateHeld, now.Add(m.cfg.HoldTime)
				t.set(p, l.Addr, nv)
			}
			return nil
		})
	}
}
