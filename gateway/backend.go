package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
)

// backend is the tsp.Backend of one session: it turns create/accept/delete into lease
// operations and data-plane changes.
type backend struct {
	g   *Gateway
	s   *session
	gen uint64 // s.ctlGen when this control connection took s over
}

var _ tsp.Backend = (*backend)(nil)

func statusErr(code int, err error) error { return &tsp.StatusError{Code: code, Err: err} }

// Create answers a create (or a renewal create) with an offer for the session's lease.
func (b *backend) Create(ctx context.Context, id tsp.Identity, req *tsp.Tunnel) (*tsp.Tunnel, error) {
	g, s := b.g, b.s
	rule, err := g.policy.Resolve(id.Name)
	if err != nil {
		return nil, statusErr(tsp.StatusAuthenticationFailed, fmt.Errorf("policy refuses %q: %w", id.Name, err))
	}
	if !g.typeAllowed(rule, req.Type) {
		return nil, statusErr(tsp.StatusUnsupportedTunnelType, fmt.Errorf("tunnel type %s not allowed for %q", req.Type, id.Name))
	}
	if req.Data != nil && req.Data.Token != ([tsp.TokenLen]byte{}) {
		if err := b.resume(id, req.Data.Token); err != nil {
			return nil, err
		}
		s = b.s
	}
	endpoint := req.Client.IPv6
	s.mu.Lock()
	source := s.remote.Addr().Unmap()
	s.mu.Unlock()
	if req.Type == tsp.TypeV4V6 && endpoint != source {
		return nil, statusErr(tsp.StatusInvalidIPv6, fmt.Errorf("client endpoint %s is not the source %s", endpoint, source))
	}
	l, err := b.lease(ctx, id, rule, req.Type, endpoint)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.identity, s.rule, s.lease, s.endpoint = id, rule, l, endpoint
	fresh := s.token == ([tsp.TokenLen]byte{}) && req.Type.Extended()
	if fresh {
		_, _ = rand.Read(s.token[:])
	}
	tok, overTLS := s.token, s.control == "tls"
	s.mu.Unlock()
	if fresh { // not under s.mu: the table's lock is always taken first
		g.sessions.setToken(s, tok)
	}
	return g.offer(req.Type, rule, l, endpoint, tok, overTLS), nil
}

// resume lets this control connection take over the earlier session that issued token (a
// client whose old connection died with its network, while its DTLS data channel roamed):
// same session, lease and data channel. An unknown token is not an error (the session ended;
// the create goes on as a new one); a token of another identity is refused.
func (b *backend) resume(id tsp.Identity, token [tsp.TokenLen]byte) error {
	g, cur := b.g, b.s
	old := g.sessions.byTokenGet(token)
	if old == nil || old == cur {
		return nil
	}
	old.mu.Lock()
	owner, closed, prevClose := old.identity.Name, old.closed, old.closeCtl
	old.mu.Unlock()
	if owner != id.Name || closed {
		return statusErr(tsp.StatusAuthenticationFailed, fmt.Errorf("data token of session %s does not belong to %q", old.id, id.Name))
	}
	g.sessions.adopt(old, cur)
	old.mu.Lock()
	b.s, b.gen = old, old.ctlGen
	old.mu.Unlock()
	if prevClose != nil {
		prevClose() // the previous control connection, if it still lingers
	}
	old.log.Info().Str("remote", cur.remote.String()).Msg("session resumed on a new control connection")
	return nil
}

// lease offers a new lease or renews the session's current one.
func (b *backend) lease(ctx context.Context, id tsp.Identity, rule auth.Rule, typ tsp.TunnelType, ep netip.Addr) (lease.Lease, error) {
	g, s := b.g, b.s
	s.mu.Lock()
	cur := s.lease
	s.mu.Unlock()
	start := time.Now()
	var l lease.Lease
	var err error
	if cur.Addr.IsValid() && cur.State == lease.StateActive {
		l, err = g.leases.Renew(ctx, cur.Addr, s.id)
	} else {
		l, err = g.leases.Offer(ctx, lease.Request{
			Identity: id.Name, Pool: rule.Pool, Session: s.id, Endpoint: ep,
			Transport: string(typ), MaxSessions: rule.MaxSessions,
		})
	}
	g.metrics.ObserveAllocation(time.Since(start))
	if err != nil {
		return lease.Lease{}, leaseStatus(err)
	}
	return l, nil
}

// leaseStatus maps lease errors to TSP status codes.
func leaseStatus(err error) error {
	switch {
	case errors.Is(err, lease.ErrPoolExhausted), errors.Is(err, lease.ErrSessionLimit):
		return statusErr(tsp.StatusNoMoreTunnels, err)
	case errors.Is(err, lease.ErrInvalidIdentity):
		return statusErr(tsp.StatusAuthenticationFailed, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return statusErr(tsp.StatusServerTooBusy, err)
	}
	return statusErr(tsp.StatusServerError, err)
}

// typeAllowed applies policy and configuration to a requested tunnel type.
func (g *Gateway) typeAllowed(rule auth.Rule, t tsp.TunnelType) bool {
	if t == tsp.TypeV4V6 && g.plain == nil {
		return false
	}
	p := g.policy.Load()
	switch t {
	case tsp.TypeV4AnyV6:
		return p.AllowsTransport(rule, tunnel.DTLS) || p.AllowsTransport(rule, tunnel.TLS)
	default:
		return p.AllowsTransport(rule, string(t))
	}
}

// offer builds the tunnel offer for a lease.
func (g *Gateway) offer(typ tsp.TunnelType, rule auth.Rule, l lease.Lease, ep netip.Addr, tok [tsp.TokenLen]byte, overTLS bool) *tsp.Tunnel {
	life := uint32(time.Until(l.Expires).Round(time.Second) / time.Second)
	if l.State != lease.StateActive || life == 0 {
		life = uint32(g.cfg.Leases.Lifetime.D() / time.Second)
	}
	o := &tsp.Tunnel{
		Action:   tsp.ActionInfo,
		Type:     typ,
		Lifetime: life,
		Server:   &tsp.Endpoint{IPv4: g.cfg.TEP.InnerV4, IPv6: g.outerV6()},
		Client:   &tsp.ClientInfo{IPv4: l.Addr, IPv6: ep},
	}
	if ka := g.cfg.TEP.Keepalive.D(); ka > 0 {
		o.Client.Keepalive = &tsp.Keepalive{Interval: uint32(ka / time.Second), Address: g.cfg.TEP.InnerV4}
	}
	if typ == tsp.TypeV4V6 {
		o.Client.DNSServers = g.classicDNS()
		return o
	}
	o.MTU = uint16(g.dataMTU(typ))
	o.Client.Routes = append([]netip.Prefix(nil), rule.Routes...)
	o.Client.DNSServers = g.extendedDNS(rule)
	o.Data = &tsp.DataChannel{Token: tok, Port: g.port(), Transports: g.dataTransports(typ, rule, overTLS)}
	return o
}

// classicDNS is the IPv6 DNS list for gogoc, which crashes without one: the configured
// servers, or the gateway's own outer address as a harmless placeholder.
func (g *Gateway) classicDNS() []netip.Addr {
	if len(g.cfg.TEP.DNSv6) > 0 {
		return g.cfg.TEP.DNSv6[:min(len(g.cfg.TEP.DNSv6), tsp.MaxDNSServers)]
	}
	return []netip.Addr{g.outerV6()}
}

func (g *Gateway) extendedDNS(rule auth.Rule) []netip.Addr {
	dns := rule.DNS
	if len(dns) == 0 {
		dns = append(append([]netip.Addr(nil), g.cfg.TEP.DNSv4...), g.cfg.TEP.DNSv6...)
	}
	return dns[:min(len(dns), tsp.MaxDNSServers)]
}

// dataTransports lists the data transports an offer names, in preference order.
func (g *Gateway) dataTransports(typ tsp.TunnelType, rule auth.Rule, overTLS bool) []tsp.TunnelType {
	p := g.policy.Load()
	var out []tsp.TunnelType
	if (typ == tsp.TypeV4DTLSV6 || typ == tsp.TypeV4AnyV6) && p.AllowsTransport(rule, tunnel.DTLS) && g.dtls != nil {
		out = append(out, tsp.TypeV4DTLSV6)
	}
	if (typ == tsp.TypeV4TLSV6 || typ == tsp.TypeV4AnyV6) && p.AllowsTransport(rule, tunnel.TLS) && overTLS {
		out = append(out, tsp.TypeV4TLSV6)
	}
	return out
}

// Accept activates the lease and attaches the data plane.
func (b *backend) Accept(ctx context.Context, id tsp.Identity, offer *tsp.Tunnel, data tsp.TunnelType) error {
	g, s := b.g, b.s
	s.mu.Lock()
	addr := s.lease.Addr
	s.transport = string(data)
	s.mu.Unlock()
	l, err := g.leases.Accept(ctx, addr, s.id)
	if err != nil {
		return leaseStatus(err)
	}
	s.mu.Lock()
	s.lease, s.transport = l, string(data)
	s.mu.Unlock()
	if err := g.attachData(s, data); err != nil {
		return statusErr(tsp.StatusServerError, err)
	}
	s.log.Info().Str("identity", id.Name).Str("lease_v4", l.Addr.String()).Str("transport", string(data)).
		Time("expires", l.Expires).Msg("tunnel established")
	return nil
}

// Delete ends the session's tunnel at the client's request.
func (b *backend) Delete(ctx context.Context, id tsp.Identity) error {
	b.g.detachData(b.s, lease.ReasonClosed)
	return nil
}
