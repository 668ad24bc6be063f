package gateway

import (
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/gateway/tep"
)

// leaseStats is the lease manager as a metrics.LeaseStats.
type leaseStats struct{ m *lease.Manager }

func (s leaseStats) LeaseCounts() []metrics.LeaseCount {
	var out []metrics.LeaseCount
	if s.m == nil { // a TEP node
		return nil
	}
	for _, p := range s.m.Stats() {
		out = append(out,
			metrics.LeaseCount{Pool: p.Name, State: "free", N: int(p.Free)},
			metrics.LeaseCount{Pool: p.Name, State: "offered", N: p.Offered},
			metrics.LeaseCount{Pool: p.Name, State: "active", N: p.Active},
			metrics.LeaseCount{Pool: p.Name, State: "held", N: p.Held},
		)
	}
	return out
}

// Dataplane implements metrics.DataplaneStats: traffic by transport, and the drops of the
// data plane, the transports and the control plane by reason.
func (g *Gateway) Dataplane() metrics.DataplaneSnapshot {
	snap := metrics.DataplaneSnapshot{Drops: map[string]uint64{}}
	var st tep.Stats
	if g.tep != nil {
		st = g.tep.Stats()
	}
	for tr, t := range st.Transports {
		snap.Traffic = append(snap.Traffic,
			metrics.Traffic{Direction: metrics.DirectionIn, Transport: tr, Packets: t.In.Packets, Bytes: t.In.Bytes},
			metrics.Traffic{Direction: metrics.DirectionOut, Transport: tr, Packets: t.Out.Packets, Bytes: t.Out.Bytes},
		)
	}
	for k, v := range st.Drops {
		snap.Drops[k] = v
	}
	for _, d := range st.Denied {
		snap.Denied = append(snap.Denied, metrics.Denied{Rule: d.Rule, Direction: d.Direction, Packets: d.Packets})
	}
	snap.ConntrackEvictions = st.ConntrackEvictions
	if g.park != nil {
		snap.ParkedReaders = g.park.Parked()
	}
	if g.dtls != nil {
		d := g.dtls.Stats()
		snap.Drops["dtls_not_ipv4"] += d.DroppedMalformed
		snap.Drops["dtls_queue_full"] += d.DroppedQueueFull
		snap.Drops["dtls_unknown"] += d.DroppedUnknown
		snap.Drops["dtls_handshake_limit"] += d.DroppedHandshakes
		snap.Drops["dtls_hello_verify"] += d.HelloVerifies
		snap.Drops["dtls_hello_rate_limit"] += d.DroppedHelloRate
		snap.Drops["dtls_bad_hello"] += d.DroppedBadHello
		snap.Drops["dtls_bad_cookie"] += d.DroppedBadCookie
		snap.Drops["dtls_old_client"] += d.DroppedOldClient
		snap.Drops["dtls_source_limit"] += d.DroppedSourceLimit
		snap.Drops["data_unknown_session"] += d.DataDroppedUnknown
		snap.Drops["data_forged"] += d.DataDroppedForged
		snap.Drops["data_replayed"] += d.DataDroppedReplayed
		snap.Drops["data_short"] += d.DataDroppedShort
	}
	if g.plain != nil {
		p := g.plain.Stats()
		snap.Drops["plain_unknown_source"] += p.UnknownSource
		snap.Drops["plain_truncated"] += p.Truncated
	}
	if g.mux != nil {
		u := g.mux.Stats()
		snap.Drops["udp_junk"] += u.DroppedJunk + u.DroppedEmpty + u.DroppedNoHandler
		snap.Drops["udp_truncated"] += u.DroppedTruncated
	}
	if g.ctl != nil {
		g.ctl.Drops(snap.Drops)
		snap.Drops["enroll_connection_limit"] += g.enroll.refused.Load()
	}
	if g.binder != nil {
		snap.Drops["tep_unbound_dtls"] += g.binder.Stats().Refused
	}
	return snap
}
