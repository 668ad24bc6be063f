package lease

import (
	"context"
	"fmt"
	"net/netip"
)

// Accept makes the offered lease of addr active for Lifetime and addr the
// identity's sticky address. A non-empty transport replaces the offer's.
// Accepting the session's active lease again returns it unchanged.
func (m *Manager) Accept(ctx context.Context, addr netip.Addr, session, transport string) (Lease, error) {
	if !addr.Is4() {
		return Lease{}, fmt.Errorf("%w: %v is not an IPv4 address", ErrNotFound, addr)
	}
	var out Lease
	err := m.run(ctx, func(t *tx) error {
		s, err := t.sessionSlot(addr, session)
		if err != nil {
			return err
		}
		if s.State == StateActive {
			out = s.Lease
			return nil
		}
		if !s.Static {
			if err := t.remember(s.Identity, addr); err != nil {
				return err
			}
		}
		now := m.now()
		nv := s.Lease
		nv.State, nv.Granted, nv.Expires = StateActive, now, now.Add(m.cfg.Lifetime)
		if transport != "" {
			nv.Transport = transport
		}
		t.set(m.poolFor(u32(addr)), addr, nv)
		t.emit(EventGranted, nv, "")
		out = nv
		return nil
	})
	if err != nil {
		return Lease{}, fmt.Errorf("accept %v: %w", addr, err)
	}
	return out, nil
}

// Renew gives the active lease of addr a fresh lifetime.
func (m *Manager) Renew(ctx context.Context, addr netip.Addr, session string) (Lease, error) {
	if !addr.Is4() {
		return Lease{}, fmt.Errorf("%w: %v is not an IPv4 address", ErrNotFound, addr)
	}
	var out Lease
	err := m.run(ctx, func(t *tx) error {
		s, err := t.sessionSlot(addr, session)
		if err != nil {
			return err
		}
		if s.State != StateActive {
			return fmt.Errorf("%w: lease is %s", ErrBadState, s.State)
		}
		nv := s.Lease
		nv.Expires = m.now().Add(m.cfg.Lifetime)
		t.set(m.poolFor(u32(addr)), addr, nv)
		t.emit(EventRenewed, nv, "")
		out = nv
		return nil
	})
	if err != nil {
		return Lease{}, fmt.Errorf("renew %v: %w", addr, err)
	}
	return out, nil
}

// Release ends the session's lease of addr: an active lease is held for its
// identity for HoldTime (EventReleased); an offered one goes back as if its
// offer had timed out.
func (m *Manager) Release(ctx context.Context, addr netip.Addr, session string, why Reason) error {
	if !addr.Is4() {
		return fmt.Errorf("%w: %v is not an IPv4 address", ErrNotFound, addr)
	}
	err := m.run(ctx, func(t *tx) error {
		t.sessionRelease = true
		s, err := t.sessionSlot(addr, session)
		if err != nil {
			return err
		}
		was := s.State
		l := t.release(s)
		if was == StateActive {
			t.emit(EventReleased, l, why)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release %v: %w", addr, err)
	}
	return nil
}

// ReleaseIdentity releases every offered and active lease of identity and
// returns them as they are afterwards.
func (m *Manager) ReleaseIdentity(ctx context.Context, identity string, why Reason) ([]Lease, error) {
	if err := ValidIdentity(identity); err != nil {
		return nil, err
	}
	var out []Lease
	err := m.run(ctx, func(t *tx) error {
		out = out[:0]
		is := m.idents[identity]
		if is == nil {
			return nil
		}
		var err error
		out, err = t.releaseSessions(is, why, out)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("release identity %q: %w", identity, err)
	}
	return out, nil
}

// FreeIdentity ends every lease of identity for good (revocation with
// on_revoke: release): offered and active leases are released, held ones and
// the sticky index are dropped. Static reservations stay. It returns the
// leases it changed as they are afterwards.
func (m *Manager) FreeIdentity(ctx context.Context, identity string, why Reason) ([]Lease, error) {
	if err := ValidIdentity(identity); err != nil {
		return nil, err
	}
	var out []Lease
	err := m.run(ctx, func(t *tx) error {
		out = out[:0]
		if err := t.lockIdent(identity); err != nil {
			return err
		}
		is := m.idents[identity]
		if is == nil {
			return nil
		}
		for _, a := range is.sticky {
			if err := t.checkAddr(a); err != nil {
				return err
			}
		}
		if _, err := t.releaseSessions(is, why, nil); err != nil {
			return err
		}
		for _, a := range is.sticky {
			sl := m.slots[u32(a)]
			if sl == nil || sl.Static {
				continue
			}
			if sl.State == StateHeld || sl.State == StateFree {
				nv := Lease{Addr: a, Pool: sl.Pool}
				t.set(m.poolFor(u32(a)), a, nv)
				out = append(out, nv)
			}
		}
		t.setSticky(identity, nil)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("free identity %q: %w", identity, err)
	}
	return out, nil
}

// Free returns one held address to the pool and drops it from its identity's
// sticky index (revocation of one certificate with on_revoke: release).
// Static reservations, addresses in use and free addresses are left alone.
func (m *Manager) Free(ctx context.Context, addr netip.Addr) error {
	if !addr.Is4() {
		return fmt.Errorf("%w: %v is not an IPv4 address", ErrNotFound, addr)
	}
	err := m.run(ctx, func(t *tx) error {
		if err := t.checkAddr(addr); err != nil {
			return err
		}
		s := m.slots[u32(addr)]
		if s == nil || s.State != StateHeld || s.Static {
			return nil
		}
		if err := t.forget(s.Identity, addr); err != nil {
			return err
		}
		t.set(m.poolFor(u32(addr)), addr, Lease{Addr: addr, Pool: s.Pool})
		return nil
	})
	if err != nil {
		return fmt.Errorf("free %v: %w", addr, err)
	}
	return nil
}

// releaseSessions releases every offered and active lease of an identity and
// appends them to out; it touches nothing unless all are available.
func (t *tx) releaseSessions(is *identState, why Reason, out []Lease) ([]Lease, error) {
	for _, s := range is.sessions {
		if err := t.checkAddr(s.Addr); err != nil {
			return out, err
		}
	}
	for len(is.sessions) > 0 {
		s := is.sessions[0]
		was := s.State
		l := t.release(s)
		if was == StateActive {
			t.emit(EventReleased, l, why)
		}
		out = append(out, l)
	}
	return out, nil
}

func (t *tx) sessionSlot(addr netip.Addr, session string) (*slot, error) {
	if err := t.checkAddr(addr); err != nil {
		return nil, err
	}
	s := t.m.slots[u32(addr)]
	if s == nil || (s.State != StateOffered && s.State != StateActive) {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, addr)
	}
	if s.Session != session {
		return nil, ErrSessionMismatch
	}
	return s, nil
}

// release moves an offered or active slot to its next state and returns
// the lease as it is afterwards: active -> held; offered -> held when the
// address is the identity's (sticky or static), else free.
func (t *tx) release(s *slot) Lease {
	m := t.m
	p := m.poolFor(u32(s.Addr))
	nv := s.Lease
	if s.State == StateOffered && !s.Static && !m.identLocked(s.Identity).hasSticky(s.Addr) {
		nv = Lease{Addr: s.Addr, Pool: p.name}
		t.set(p, s.Addr, nv)
		return nv
	}
	nv.State, nv.Expires, nv.Owner = StateHeld, m.now().Add(m.cfg.HoldTime), ""
	t.set(p, s.Addr, nv)
	return nv
}

// ReleaseAll releases every offered and active lease of this gateway (all of
// them in single-node mode) and returns how many. A gateway calls it at
// start for the sessions of a previous run, and when it stops.
func (m *Manager) ReleaseAll(ctx context.Context, why Reason) (int, error) {
	total := 0
	for {
		n := 0
		err := m.run(ctx, func(t *tx) error {
			n = 0
			for _, s := range m.expiry {
				if n == m.batch {
					break
				}
				if !m.ownSessionLocked(s) {
					continue
				}
				if err := t.checkAddr(s.Addr); err != nil {
					return err
				}
				n++
			}
			t.releaseSome(n, why)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("release all: %w", err)
		}
		total += n
		if n < m.batch {
			return total, nil
		}
	}
}

// ownSessionLocked reports whether s is an offered or active lease of this
// gateway.
func (m *Manager) ownSessionLocked(s *slot) bool {
	return (s.State == StateOffered || s.State == StateActive) && !m.foreignLocked(s)
}

// Flush commits the sessions' releases an exclusive store was not sent, and
// returns how many. A gateway calls it when it stops, after ReleaseAll.
func (m *Manager) Flush(ctx context.Context) (int, error) {
	if !m.exclusive {
		return 0, nil
	}
	snap, err := m.store.Load(ctx)
	if err != nil {
		return 0, fmt.Errorf("flush: %w", err)
	}
	var active []Record
	for _, r := range snap.Leases {
		if r.Lease.State == StateActive {
			active = append(active, r)
		}
	}
	total := 0
	for len(active) > 0 {
		batch := active[:min(len(active), m.batch)]
		active = active[len(batch):]
		n := 0
		err := m.run(ctx, func(t *tx) error {
			n = 0
			for _, r := range batch {
				if err := t.checkAddr(r.Lease.Addr); err != nil {
					return err
				}
			}
			for _, r := range batch {
				a := r.Lease.Addr
				s := m.slots[u32(a)]
				// A release kept in memory: a held slot over the store's
				// active record of the same version.
				if s == nil || s.version != r.Version || s.State != StateHeld || s.Identity != r.Lease.Identity {
					continue
				}
				t.set(m.poolFor(u32(a)), a, s.Lease)
				n++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("flush: %w", err)
		}
		total += n
	}
	return total, nil
}

// releaseSome releases the first n offered or active leases of this gateway
// in the heap, collected first because releasing reorders the heap.
func (t *tx) releaseSome(n int, why Reason) {
	batch := make([]*slot, 0, n)
	for _, s := range t.m.expiry {
		if len(batch) == n {
			break
		}
		if t.m.ownSessionLocked(s) {
			batch = append(batch, s)
		}
	}
	for _, s := range batch {
		was := s.State
		l := t.release(s)
		if was == StateActive {
			t.emit(EventReleased, l, why)
		}
	}
}
