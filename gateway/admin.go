package gateway

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/tep"
)

// adminBackend implements admin.Backend for a running gateway.
type adminBackend struct{ g *Gateway }

var _ admin.Backend = adminBackend{}

// errTEPNode refuses what only a control node can do.
var errTEPNode = fmt.Errorf("%w: this node runs the tep role only; ask a control node", admin.ErrInvalid)

func (a adminBackend) Leases(context.Context) ([]admin.Lease, error) {
	if a.g.leases == nil {
		return nil, errTEPNode
	}
	ls := a.g.leases.List()
	sort.Slice(ls, func(i, j int) bool { return ls[i].Addr.Less(ls[j].Addr) })
	out := make([]admin.Lease, 0, len(ls))
	for _, l := range ls {
		al := admin.Lease{
			Addr: l.Addr.String(), Pool: l.Pool, Identity: l.Identity, State: l.State.String(),
			Transport: l.Transport, Expires: l.Expires, Static: l.Static, Gateway: l.Owner,
		}
		if l.State == lease.StateActive || l.State == lease.StateOffered {
			al.Session = l.Session
		}
		if l.Endpoint.IsValid() {
			al.Endpoint = l.Endpoint.String()
		}
		out = append(out, al)
	}
	return out, nil
}

func (a adminBackend) Sessions(context.Context) ([]admin.Session, error) {
	traffic := map[string]tep.SessionSnapshot{}
	if a.g.tep != nil {
		for _, t := range a.g.tep.Sessions() {
			traffic[t.ID] = t
		}
	}
	if a.g.ctl == nil { // a TEP node: its data plane's sessions
		return tepSessionList(traffic), nil
	}
	var out []admin.Session
	for _, v := range a.g.ctl.Sessions() {
		as := admin.Session{ID: v.ID, Identity: v.Identity, Transport: v.Transport, Mechanism: v.Mechanism,
			Serial: v.Serial, Since: v.Started}
		if v.Lease.IsValid() {
			as.Lease = v.Lease.String()
		}
		switch {
		case v.Endpoint.IsValid() && v.Endpoint.Port() != 0:
			as.Endpoint = v.Endpoint.String()
		case v.Endpoint.IsValid():
			as.Endpoint = v.Endpoint.Addr().String()
		case v.Remote.IsValid():
			as.Endpoint = v.Remote.Addr().String()
		}
		as.TEP = v.TEP
		if t, ok := traffic[v.ID]; ok {
			as.PacketsIn, as.BytesIn = t.In.Packets, t.In.Bytes
			as.PacketsOut, as.BytesOut = t.Out.Packets, t.Out.Bytes
		}
		out = append(out, as)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out, nil
}

// tepSessionList lists a TEP node's sessions.
func tepSessionList(ts map[string]tep.SessionSnapshot) []admin.Session {
	out := make([]admin.Session, 0, len(ts))
	for _, t := range ts {
		as := admin.Session{ID: t.ID, Identity: t.Identity, Lease: t.Lease.String(), Transport: t.Transport, Since: t.Since,
			PacketsIn: t.In.Packets, BytesIn: t.In.Bytes, PacketsOut: t.Out.Packets, BytesOut: t.Out.Bytes}
		if t.Endpoint.IsValid() {
			as.Endpoint = t.Endpoint.String()
			if t.Endpoint.Port() == 0 {
				as.Endpoint = t.Endpoint.Addr().String()
			}
		}
		out = append(out, as)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

func (a adminBackend) Kick(_ context.Context, id string) error {
	if a.g.ctl == nil {
		return errTEPNode
	}
	if err := a.g.ctl.Kick(id); err != nil {
		return fmt.Errorf("%w: no session %q", admin.ErrNotFound, id)
	}
	return nil
}

func (a adminBackend) Revoke(ctx context.Context, target string) (admin.RevokeResult, error) {
	if a.g.ctl == nil {
		return admin.RevokeResult{}, errTEPNode
	}
	res, err := a.g.Revoke(ctx, target)
	switch {
	case errors.Is(err, certs.ErrUnknownSerial), errors.Is(err, certs.ErrUnknownIdentity):
		return res, fmt.Errorf("%w: %v", admin.ErrNotFound, err)
	case errors.Is(err, certs.ErrBadIdentity), errors.Is(err, certs.ErrBadSerial), errors.Is(err, certs.ErrAlreadyRevoked):
		return res, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	return res, err
}

func (a adminBackend) Token(_ context.Context, identity string, ttl time.Duration) (admin.TokenResult, error) {
	if a.g.ctl == nil {
		return admin.TokenResult{}, errTEPNode
	}
	if ttl == 0 {
		ttl = a.g.cfg.CA.TokenTTL.D()
	}
	tok, err := a.g.ca.Token(identity, ttl)
	if err != nil {
		return admin.TokenResult{}, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	a.g.log.Info().Str("event", "token").Str("identity", identity).Dur("ttl", ttl).Msg("enrollment token issued")
	return admin.TokenResult{Token: tok, Identity: identity, Fingerprint: a.g.ca.Fingerprint(), Expires: a.g.now().Add(ttl)}, nil
}

func (a adminBackend) Status(ctx context.Context) (admin.Status, error) {
	st := admin.Status{Version: a.g.version, Started: a.g.started, Listen: a.g.listenAddr,
		Cluster: a.g.clusterStatus(ctx), BGP: a.g.bgpStatus(ctx), Roles: a.g.cfg.Roles}
	stats := map[string]lease.PoolStats{}
	if a.g.ctl != nil {
		st.Sessions = a.g.ctl.Count()
		for _, p := range a.g.leases.Stats() {
			stats[p.Name] = p
		}
	} else {
		st.Sessions = len(a.g.tep.Sessions())
	}
	if a.g.teps != nil {
		for _, t := range a.g.teps.TEPs() {
			st.TEPs = append(st.TEPs, admin.TEP{Name: t.Name, IPv6: t.IPv6.String(), InnerV4: t.InnerV4.String(),
				DTLSPort: t.DTLSPort, Plain: t.Plain, Sessions: t.Load})
		}
	}
	static := map[string]uint64{}
	for _, addr := range a.g.policy.Load().Reservations() {
		static[a.g.cfg.PoolOf(addr)]++
	}
	for _, p := range a.g.cfg.Pools {
		ps := stats[p.Name]
		var ranges []string
		for _, pr := range p.Prefixes {
			ranges = append(ranges, pr.String())
		}
		for _, r := range p.Ranges {
			ranges = append(ranges, r.First.String()+"-"+r.Last.String())
		}
		st.Pools = append(st.Pools, admin.PoolStatus{
			Name: p.Name, Ranges: ranges, Size: ps.Size, Free: ps.Free,
			Offered: uint64(ps.Offered), Active: uint64(ps.Active), Held: uint64(ps.Held), Static: static[p.Name],
		})
	}
	return st, nil
}
