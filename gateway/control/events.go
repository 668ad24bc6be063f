package control

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/gateway/events"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/tep"
)

// leaseEventBuffer is the lease-event subscription's buffer; the lease manager drops and
// counts events that do not fit, and the next reconcile catches up.
const leaseEventBuffer = 1024

// reconcile runs every reconcileEvery, and at the next dropCheckEvery after a dropped event.
const (
	reconcileEvery = 5 * time.Second
	dropCheckEvery = 250 * time.Millisecond
)

// FollowLeases ends the sessions that lose their lease, logs the lease events and
// reconciles sessions with leases and the TEP (for dropped events), until ctx ends.
func (s *Server) FollowLeases(ctx context.Context) error {
	dropped := s.cfg.Leases.DroppedEvents()
	ch, cancel := s.cfg.Leases.Subscribe(s.eventBuffer)
	defer cancel()
	return s.followLeases(ctx, ch, dropped)
}

// followLeases follows ch; dropped is the lease manager's drop count before ch was made.
func (s *Server) followLeases(ctx context.Context, ch <-chan lease.Event, dropped uint64) error {
	tick := time.NewTicker(dropCheckEvery)
	defer tick.Stop()
	every := max(1, int(s.reconcileEvery/dropCheckEvery))
	ticks := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			s.onLeaseEvent(ev)
		case <-tick.C:
			ticks++
			d := s.cfg.Leases.DroppedEvents()
			if d == dropped && ticks < every {
				continue
			}
			dropped, ticks = d, 0
			s.reconcile()
		}
	}
}

// reconcile enforces the invariant: a session keeps a lease only while the lease manager has
// it offered or active for that session, and a TEP entry exists only for a live session. It
// returns how many sessions it ended and orphan entries it removed.
func (s *Server) reconcile() (ended, orphans int) {
	for _, ss := range s.sessions.all() {
		_, l, closed := ss.state()
		if closed || !l.Addr.IsValid() {
			continue
		}
		cur, ok := s.cfg.Leases.Get(l.Addr)
		if ok && cur.Session == ss.id && (cur.State == lease.StateOffered || cur.State == lease.StateActive) {
			continue
		}
		if s.end(ss, lease.ReasonExpired) {
			ss.log.Warn().Str("lease_v4", l.Addr.String()).Str("reason", "lease no longer held by the session").Msg("session ended by reconciliation")
			s.countDrop("sessions_reconciled")
			ended++
		}
	}
	var local []tep.SessionSnapshot
	if s.cfg.TEP != nil { // the TEP nodes reconcile with their bindings
		local = s.cfg.TEP.Sessions()
	}
	for _, ts := range local {
		if s.sessions.get(ts.ID) != nil {
			continue
		}
		// A session between its end and leaving the table has no TEP entry any more, so an
		// entry whose session is not in the table is an orphan.
		s.cfg.TEP.RemoveSession(ts.Lease, ts.ID)
		s.countDrop("tep_orphans_removed")
		orphans++
	}
	if ended+orphans > 0 {
		s.log.Warn().Int("sessions_ended", ended).Int("tep_orphans", orphans).Msg("reconciliation repaired state")
	}
	return ended, orphans
}

func (s *Server) onLeaseEvent(ev lease.Event) {
	l := ev.Lease
	s.log.Info().Str("event", ev.Kind.String()).Str("lease_v4", l.Addr.String()).Str("pool", l.Pool).
		Str("identity", l.Identity).Str("session", l.Session).Str("reason", string(ev.Reason)).
		Time("expires", l.Expires).Msg("lease " + ev.Kind.String())
	if k, ok := leaseEvents[ev.Kind]; ok {
		s.cfg.Events(events.Event{Time: s.now(), Kind: k, Identity: l.Identity, Session: l.Session,
			Lease: l.Addr.String(), Reason: string(ev.Reason)})
	}
	switch ev.Kind {
	case lease.EventExpired, lease.EventOfferExpired, lease.EventReplaced, lease.EventReleased:
	default:
		return
	}
	ss := s.sessions.get(l.Session)
	if ss == nil {
		return
	}
	if _, cur, _ := ss.state(); cur.Addr == l.Addr {
		why := ev.Reason
		if why == "" {
			why = lease.Reason(ev.Kind.String())
		}
		s.end(ss, why)
	}
}

// CloseRevoked ends the sessions authenticated with serial, or with serial "" every session
// of identity, and returns their ids. With leases.on_revoke "release" their addresses go back
// to the pool; with "hold" they stay held as after any session end.
func (s *Server) CloseRevoked(ctx context.Context, identity, serial string) []string {
	matches := s.sessions.matching("", serial)
	if serial == "" {
		matches = s.sessions.matching(identity, "")
	}
	var addrs []netip.Addr
	ids := make([]string, 0, len(matches))
	for _, ss := range matches {
		if _, l, _ := ss.state(); l.Addr.IsValid() {
			addrs = append(addrs, l.Addr)
		}
		ids = append(ids, ss.id)
		ss.log.Warn().Str("reason", "certificate revoked").Msg("session closed")
		s.end(ss, lease.ReasonRevoked)
	}
	if s.gw.Leases.OnRevoke != "release" {
		return ids
	}
	if serial == "" && identity != "" {
		if _, err := s.cfg.Leases.FreeIdentity(ctx, identity, lease.ReasonRevoked); err != nil {
			s.log.Warn().Err(err).Str("identity", identity).Msg("freeing revoked leases failed")
		}
		return ids
	}
	for _, a := range addrs {
		if err := s.cfg.Leases.Free(ctx, a); err != nil && !errors.Is(err, lease.ErrNotFound) {
			s.log.Warn().Err(err).Str("lease_v4", a.String()).Msg("freeing a revoked lease failed")
		}
	}
	return ids
}

// Matching returns the ids of the live sessions of identity, or of the certificate serial.
func (s *Server) Matching(identity, serial string) []string {
	var ids []string
	for _, ss := range s.sessions.matching(identity, serial) {
		ids = append(ids, ss.id)
	}
	return ids
}

// endedEvent reports the end of ss, before its lease is taken away.
func (s *Server) endedEvent(ss *session, why lease.Reason) {
	v := ss.view()
	e := events.Event{Time: s.now(), Kind: events.Ended, Identity: v.Identity, Session: v.ID, Serial: v.Serial, Reason: string(why)}
	if v.Lease.IsValid() {
		e.Lease = v.Lease.String()
	}
	if v.Remote.IsValid() {
		e.Remote = v.Remote.String()
	}
	s.cfg.Events(e)
}

// leaseEvents are the lease events the console shows, by their kind.
var leaseEvents = map[lease.EventKind]events.Kind{
	lease.EventGranted:      events.Granted,
	lease.EventExpired:      events.Expired,
	lease.EventOfferExpired: events.Expired,
	lease.EventReplaced:     events.Replaced,
}

// handshakeFailed reports a refusal before a tunnel was up.
func (s *Server) handshakeFailed(remote netip.AddrPort, identity, session, reason string) {
	e := events.Event{Time: s.now(), Kind: events.HandshakeFailed, Identity: identity, Session: session, Reason: reason}
	if remote.IsValid() {
		e.Remote = remote.String()
	}
	s.cfg.Events(e)
}

// sessionHandshakeFailed reports a TSP session that ended before its tunnel was up.
func (s *Server) sessionHandshakeFailed(ss *session, reason string) {
	remote, _ := ss.source()
	id, _, _ := ss.state()
	s.handshakeFailed(remote, id, ss.id, reason)
}
