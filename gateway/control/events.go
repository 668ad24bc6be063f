package control

import (
	"context"
	"errors"
	"net/netip"

	"github.com/dstmgw/dstm/gateway/lease"
)

// FollowLeases ends the session that lost its lease (expired, replaced by a newer session of
// the same identity, or released by someone else) and logs the audit trail of lease events,
// until ctx ends.
func (s *Server) FollowLeases(ctx context.Context) error {
	ch, cancel := s.cfg.Leases.Subscribe(1024)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			s.onLeaseEvent(ev)
		}
	}
}

func (s *Server) onLeaseEvent(ev lease.Event) {
	l := ev.Lease
	s.log.Info().Str("event", ev.Kind.String()).Str("lease_v4", l.Addr.String()).Str("pool", l.Pool).
		Str("identity", l.Identity).Str("session", l.Session).Str("reason", string(ev.Reason)).
		Time("expires", l.Expires).Msg("lease " + ev.Kind.String())
	switch ev.Kind {
	case lease.EventExpired, lease.EventReplaced, lease.EventReleased:
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

// CloseRevoked ends the sessions authenticated with serial, or, for an identity-wide
// revocation (serial ""), every session of identity, and returns the ids of those it closed.
// With leases.on_revoke "release" their addresses go back to the pool; with "hold" they stay
// held for the identity like after any other session end.
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
