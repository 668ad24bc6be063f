package gateway

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/metrics"
)

// followLeases ends the session that lost its lease (expired, replaced by a newer session of
// the same identity, or released by someone else) and logs the audit trail of lease events.
func (g *Gateway) followLeases(ctx context.Context) error {
	ch, cancel := g.leases.Subscribe(1024)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			g.onLeaseEvent(ev)
		}
	}
}

func (g *Gateway) onLeaseEvent(ev lease.Event) {
	l := ev.Lease
	g.log.Info().Str("event", ev.Kind.String()).Str("lease_v4", l.Addr.String()).Str("pool", l.Pool).
		Str("identity", l.Identity).Str("session", l.Session).Str("reason", string(ev.Reason)).
		Time("expires", l.Expires).Msg("lease " + ev.Kind.String())
	switch ev.Kind {
	case lease.EventExpired, lease.EventReplaced, lease.EventReleased:
	default:
		return
	}
	s := g.sessions.get(l.Session)
	if s == nil {
		return
	}
	s.mu.Lock()
	mine := s.lease.Addr == l.Addr
	s.mu.Unlock()
	if mine {
		why := ev.Reason
		if why == "" {
			why = lease.Reason(ev.Kind.String())
		}
		g.endSession(s, why)
	}
}

// followRevocations closes the live sessions of every revoked certificate within moments of
// the revocation and releases (or holds) their leases, per leases.on_revoke.
func (g *Gateway) followRevocations(ctx context.Context) error {
	ch, cancel := g.ca.Subscribe(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r, ok := <-ch:
			if !ok {
				return nil
			}
			closed := g.closeRevoked("", r.Serial)
			g.log.Warn().Str("event", "revoked").Str("identity", r.Identity).Str("serial", r.Serial).
				Int("sessions_closed", len(closed)).Msg("certificate revoked")
		}
	}
}

// closeRevoked ends the sessions authenticated with the serial, or, for an identity-wide
// revocation (serial ""), every session of the identity, and returns those it closed. With
// leases.on_revoke "release" their addresses go back to the pool; with "hold" they stay held
// for the identity like after any other session end.
func (g *Gateway) closeRevoked(identity, serial string) []*session {
	matches := g.sessions.matching("", serial)
	if serial == "" {
		matches = g.sessions.matching(identity, "")
	}
	var addrs []netip.Addr
	for _, s := range matches {
		s.mu.Lock()
		if a := s.lease.Addr; a.IsValid() {
			addrs = append(addrs, a)
		}
		s.mu.Unlock()
		s.log.Warn().Str("reason", "certificate revoked").Msg("session closed")
		g.endSession(s, lease.ReasonRevoked)
	}
	if g.cfg.Leases.OnRevoke != "release" {
		return matches
	}
	if serial == "" && identity != "" {
		if _, err := g.leases.FreeIdentity(context.Background(), identity, lease.ReasonRevoked); err != nil {
			g.log.Warn().Err(err).Str("identity", identity).Msg("freeing revoked leases failed")
		}
		return matches
	}
	for _, a := range addrs {
		if err := g.leases.Free(context.Background(), a); err != nil && !errors.Is(err, lease.ErrNotFound) {
			g.log.Warn().Err(err).Str("lease_v4", a.String()).Msg("freeing a revoked lease failed")
		}
	}
	return matches
}

// LeaseCounts implements metrics.LeaseStats.
func (g *Gateway) LeaseCounts() []metrics.LeaseCount {
	var out []metrics.LeaseCount
	for _, p := range g.leases.Stats() {
		out = append(out,
			metrics.LeaseCount{Pool: p.Name, State: "free", N: int(p.Free)},
			metrics.LeaseCount{Pool: p.Name, State: "offered", N: p.Offered},
			metrics.LeaseCount{Pool: p.Name, State: "active", N: p.Active},
			metrics.LeaseCount{Pool: p.Name, State: "held", N: p.Held},
		)
	}
	return out
}

// SessionCounts implements metrics.SessionStats: live sessions by data transport.
func (g *Gateway) SessionCounts() map[string]int {
	out := map[string]int{}
	for _, s := range g.sessions.all() {
		v := s.view()
		t := v.Transport
		if t == "" {
			t = "none"
		}
		out[t]++
	}
	return out
}

// Dataplane implements metrics.DataplaneStats.
func (g *Gateway) Dataplane() metrics.DataplaneSnapshot {
	st := g.tep.Stats()
	snap := metrics.DataplaneSnapshot{Drops: map[string]uint64{}}
	for tr, t := range st.Transports {
		snap.Traffic = append(snap.Traffic,
			metrics.Traffic{Direction: metrics.DirectionIn, Transport: tr, Packets: t.In.Packets, Bytes: t.In.Bytes},
			metrics.Traffic{Direction: metrics.DirectionOut, Transport: tr, Packets: t.Out.Packets, Bytes: t.Out.Bytes},
		)
	}
	for k, v := range st.Drops {
		snap.Drops[k] = v
	}
	if g.dtls != nil {
		d := g.dtls.Stats()
		snap.Drops["dtls_not_ipv4"] += d.DroppedMalformed
		snap.Drops["dtls_queue_full"] += d.DroppedQueueFull
		snap.Drops["dtls_unknown"] += d.DroppedUnknown
		snap.Drops["dtls_handshake_limit"] += d.DroppedHandshakes
	}
	if g.plain != nil {
		p := g.plain.Stats()
		snap.Drops["plain_unknown_source"] += p.UnknownSource
		snap.Drops["plain_truncated"] += p.Truncated
	}
	if m := g.mux; m != nil {
		u := m.Stats()
		snap.Drops["udp_junk"] += u.DroppedJunk + u.DroppedEmpty + u.DroppedNoHandler
		snap.Drops["udp_truncated"] += u.DroppedTruncated
	}
	g.drops.Range(func(k, v any) bool {
		snap.Drops[k.(string)] += v.(*atomic.Uint64).Load()
		return true
	})
	return snap
}
