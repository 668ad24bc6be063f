package lease

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// maxConflictRetries bounds how often an operation is planned again after
// another writer changed a key it planned on (only with a shared store).
// After the first conflicts the retries back off (conflictBackoff): near
// exhaustion two gateways keep picking addresses the other has just taken,
// until each one's watch brings the other's writes into its cache.
const (
	maxConflictRetries = 24
	conflictBackoff    = time.Millisecond // doubled per retry from the third, at most 32 ms
)

// Offer finds an address for r and records it as offered until
// Config.OfferTimeout passes or Accept is called. In order of preference:
// the identity's lease for the same session (idempotent), its static
// reservation, its sticky address, a clean free address, a free address
// remembered by another identity, an address held for another identity
// (oldest first).
func (m *Manager) Offer(ctx context.Context, r Request) (Lease, error) {
	if err := ValidIdentity(r.Identity); err != nil {
		return Lease{}, err
	}
	var out Lease
	if err := m.run(ctx, func(t *tx) error { return t.offer(r, &out) }); err != nil {
		return Lease{}, fmt.Errorf("offer for %q: %w", r.Identity, err)
	}
	return out, nil
}

func (t *tx) offer(r Request, out *Lease) error {
	m := t.m
	p, err := m.resolvePoolLocked(r.Pool, r.Identity)
	if err != nil {
		return err
	}
	if err := t.lockIdent(r.Identity); err != nil {
		return err
	}
	is := m.identLocked(r.Identity)
	for _, s := range is.sessions {
		if s.Session == r.Session && s.Pool == p.name {
			if err := t.checkAddr(s.Addr); err != nil {
				return err
			}
			*out = s.Lease
			return nil
		}
	}
	if err := t.enforceLimit(r, is); err != nil {
		return err
	}
	a, static, err := t.pick(p, r.Identity, is)
	if err != nil {
		return err
	}
	now := m.now()
	nv := Lease{
		Addr: a, Pool: p.name, Identity: r.Identity, Session: r.Session,
		Endpoint: r.Endpoint, Transport: r.Transport, Owner: m.cfg.Owner, State: StateOffered,
		Static: static, Granted: now, Expires: now.Add(m.cfg.OfferTimeout),
	}
	t.set(p, a, nv)
	*out = nv
	return nil
}

func (t *tx) enforceLimit(r Request, is *identState) error {
	limit := r.MaxSessions
	if limit <= 0 {
		limit = t.m.cfg.MaxSessions
	}
	for len(is.sessions) >= limit {
		if t.m.cfg.OnLimit == Refuse {
			return fmt.Errorf("%w: %d of %d sessions in use", ErrSessionLimit, len(is.sessions), limit)
		}
		oldest := is.sessions[0]
		for _, s := range is.sessions[1:] {
			if s.Granted.Before(oldest.Granted) {
				oldest = s
			}
		}
		if err := t.checkAddr(oldest.Addr); err != nil {
			return err
		}
		was := oldest.State
		l := t.release(oldest)
		if was == StateActive {
			t.emit(EventReplaced, l, ReasonReplaced)
		}
	}
	return nil
}

// pick chooses and prepares the address for a new offer.
func (t *tx) pick(p *pool, id string, is *identState) (netip.Addr, bool, error) {
	m := t.m
	// The identity's own addresses first; one being committed (its previous
	// session's release, on a quick reconnect) is waited for.
	for _, a := range is.static {
		if m.poolFor(u32(a)) != p {
			continue
		}
		if err := t.checkAddr(a); err != nil {
			return netip.Addr{}, false, err
		}
		if t.usableBy(a, id) {
			return a, true, nil
		}
	}
	for _, a := range is.sticky {
		if m.poolFor(u32(a)) != p {
			continue
		}
		if err := t.checkAddr(a); err != nil {
			return netip.Addr{}, false, err
		}
		if t.usableBy(a, id) {
			return a, false, nil
		}
	}
	if a, ok, err := t.pickClean(p); ok || err != nil {
		return a, false, err
	}
	for _, l := range []*slotList{&p.freeSticky, &p.held} {
		for s := l.head; s != nil; s = s.next {
			if t.addrBusy(s.Addr) || t.identBusy(s.Identity) {
				continue
			}
			if err := t.forget(s.Identity, s.Addr); err != nil {
				return netip.Addr{}, false, err
			}
			return s.Addr, false, nil
		}
	}
	if p.freeSticky.n+p.held.n > 0 {
		// Everything left is being committed by others: wait for them.
		t.wait = waitFor{kind: waitAny}
		return netip.Addr{}, false, errWait
	}
	return netip.Addr{}, false, fmt.Errorf("%w: %q", ErrPoolExhausted, p.name)
}

// usableBy reports whether a is free or held for id, and not in flight.
func (t *tx) usableBy(a netip.Addr, id string) bool {
	if t.addrBusy(a) {
		return false
	}
	s := t.m.slots[u32(a)]
	if s == nil {
		return true
	}
	return s.Identity == id && (s.State == StateFree || s.State == StateHeld)
}

func (t *tx) forget(id string, a netip.Addr) error {
	if err := t.lockIdent(id); err != nil {
		return err
	}
	is := t.m.identLocked(id)
	if !is.hasSticky(a) {
		return nil
	}
	list := make([]netip.Addr, 0, len(is.sticky))
	for _, x := range is.sticky {
		if x != a {
			list = append(list, x)
		}
	}
	t.setSticky(id, list)
	return nil
}

// remember puts a at the front of id's sticky index; addresses pushed out
// of the bounded index that are free become clean.
func (t *tx) remember(id string, a netip.Addr) error {
	if err := t.lockIdent(id); err != nil {
		return err
	}
	is := t.m.identLocked(id)
	if len(is.sticky) > 0 && is.sticky[0] == a {
		return nil
	}
	list := []netip.Addr{a}
	for _, x := range is.sticky {
		if x != a {
			list = append(list, x)
		}
	}
	for len(list) > maxSticky {
		d := list[len(list)-1]
		if s := t.m.slots[u32(d)]; s != nil && s.State == StateFree {
			if err := t.checkAddr(d); err != nil {
				return err
			}
			t.set(t.m.poolFor(u32(d)), d, Lease{Addr: d, Pool: s.Pool})
		}
		list = list[:len(list)-1]
	}
	t.setSticky(id, list)
	return nil
}

// pickClean returns the next clean address from the pool's cursor. One that
// became clean in another operation's uncommitted change is skipped: its
// record may still be in the store.
func (t *tx) pickClean(p *pool) (netip.Addr, bool, error) {
	c := p.cursor
	for range len(t.m.busyAddr) + 1 {
		v, ok := p.clean.nextFrom(c)
		if !ok {
			return netip.Addr{}, false, nil
		}
		if a := addr4(v); !t.addrBusy(a) {
			p.cursor = v + 1
			return a, true, nil
		}
		c = v + 1
	}
	// Every clean address left is in flight: wait for those commits.
	t.wait = waitFor{kind: waitAny}
	return netip.Addr{}, false, errWait
}
