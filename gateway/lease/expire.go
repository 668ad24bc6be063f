package lease

import (
	"container/heap"
	"context"
	"fmt"
	"time"
)

// sweepBatch bounds the leases changed by one store transaction in Expire.
const sweepBatch = 1024

// Expire moves every lease due at Now() to its next state and returns how
// many it moved. Offers not accepted in time (EventOfferExpired) and active
// leases whose lifetime ran out (EventExpired) name the session that lost
// the address.
func (m *Manager) Expire(ctx context.Context) (int, error) {
	total := 0
	for {
		n := 0
		err := m.run(ctx, func(t *tx) error {
			n = t.sweep(m.now())
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("expire: %w", err)
		}
		total += n
		if n < m.batch {
			return total, nil
		}
	}
}

// sweep changes up to m.batch due leases; those being committed by
// another operation are left for the next sweep.
func (t *tx) sweep(now time.Time) int {
	m := t.m
	var due, skip []*slot
	for len(m.expiry) > 0 && len(due) < m.batch && !m.expiry[0].Expires.After(now) {
		s := heap.Pop(&m.expiry).(*slot)
		if t.addrBusy(s.Addr) || m.foreignLocked(s) {
			skip = append(skip, s)
			continue
		}
		due = append(due, s)
	}
	// Put them back so that set() finds every slot where it expects it.
	for _, s := range append(due, skip...) {
		heap.Push(&m.expiry, s)
	}
	for _, s := range due {
		t.expireSlot(s)
	}
	return len(due)
}

func (t *tx) expireSlot(s *slot) {
	m := t.m
	p := m.poolFor(u32(s.Addr))
	switch s.State {
	case StateOffered:
		lost := s.Lease
		nv := t.release(s)
		lost.State, lost.Expires = nv.State, nv.Expires
		t.emit(EventOfferExpired, lost, ReasonNoAccept)
	case StateActive:
		nv := s.Lease
		nv.State, nv.Expires, nv.Owner = StateHeld, m.now().Add(m.cfg.HoldTime), ""
		t.set(p, s.Addr, nv)
		t.emit(EventExpired, nv, ReasonExpired)
	case StateHeld:
		nv := Lease{Addr: s.Addr, Pool: p.name}
		if is := m.idents[s.Identity]; is != nil && is.hasSticky(s.Addr) {
			nv.Identity = s.Identity
		}
		t.set(p, s.Addr, nv)
	}
}

// foreignLocked reports whether s is an offered or active lease of another
// gateway of a shared store: its owner expires and releases it, and the
// store ends it with the owner's ownership.
func (m *Manager) foreignLocked(s *slot) bool {
	return !m.exclusive && s.Owner != m.cfg.Owner && (s.State == StateOffered || s.State == StateActive)
}

// SweepInterval is how often Run calls Expire.
const SweepInterval = time.Second

// Run calls Expire every SweepInterval until ctx is done, then returns nil.
// With a store of its own (bbolt) it returns an error after MaxSweepFailures failed sweeps in
// a row; with a shared store it goes on (see below).
func (m *Manager) Run(ctx context.Context) error {
	tick := time.NewTicker(SweepInterval)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if _, err := m.Expire(ctx); err != nil && ctx.Err() == nil {
			failures++
			// A shared store's failures are survived (out of reach, conflicts with a cache
			// that the watch is still catching up, a record another version wrote): the
			// sessions go on until the ownership ends, and sweeps resume. A store of this
			// gateway alone that keeps failing is a reason to stop.
			if failures >= MaxSweepFailures && m.exclusive {
				return err
			}
			continue
		}
		failures = 0
	}
}

// MaxSweepFailures is how many consecutive failed sweeps make Run give up.
const MaxSweepFailures = 30
