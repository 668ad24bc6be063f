package control

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/split"
	"github.com/dstmgw/dstm/tsp"
)

// backend is the tsp.Backend of one control connection: it turns create/accept/delete into
// lease operations and data-plane changes for the session the connection holds.
type backend struct {
	srv *Server
	ss  *session
	gen uint64 // ss.gen when this connection took ss over
}

var _ tsp.Backend = (*backend)(nil)

func statusErr(code int, err error) error { return &tsp.StatusError{Code: code, Err: err} }

// Create answers a create (or a renewal create) with an offer for the session's lease.
func (b *backend) Create(ctx context.Context, id tsp.Identity, req *tsp.Tunnel) (*tsp.Tunnel, error) {
	srv := b.srv
	rule, err := srv.cfg.Policy.ResolveWith(id.Name, id.Groups)
	if err != nil {
		return nil, statusErr(tsp.StatusAuthenticationFailed, fmt.Errorf("policy refuses %q: %w", id.Name, err))
	}
	if !srv.offers.typeAllowed(rule, req.Type) {
		return nil, statusErr(tsp.StatusUnsupportedTunnelType, fmt.Errorf("tunnel type %s not allowed for %q", req.Type, id.Name))
	}
	if req.Data != nil && req.Data.Token != ([tsp.TokenLen]byte{}) {
		if err := b.resume(id, req.Data.Token); err != nil {
			return nil, err
		}
	}
	ss := b.ss
	endpoint := req.Client.IPv6
	remote, control := ss.source()
	if req.Type == tsp.TypeV4V6 {
		if source := remote.Addr().Unmap(); endpoint != source {
			return nil, statusErr(tsp.StatusInvalidIPv6, fmt.Errorf("client endpoint %s is not the source %s", endpoint, source))
		}
		if err := srv.claimEndpoint(ss, id, endpoint); err != nil {
			return nil, err
		}
	}
	l, err := b.lease(ctx, id, rule, req.Type, endpoint)
	if err != nil {
		return nil, err
	}
	tok, fresh := ss.offered(id, rule, l, endpoint, req.Type.Extended())
	if fresh {
		srv.sessions.setToken(ss, tok)
	}
	end := srv.offers.local()
	if srv.cfg.Remote != nil {
		t, err := b.bindTEP(ctx, id, rule, req.Type, l, endpoint, tok)
		if err != nil {
			return nil, err
		}
		end = remoteEnd(t)
	}
	return srv.offers.offer(req.Type, rule, l, endpoint, tok, control == "tls", end), nil
}

// bindTEP binds the session to a TEP node before the offer names it (a control node
// without a TEP): the one it is bound to already, the policy's, or the least loaded.
func (b *backend) bindTEP(ctx context.Context, id tsp.Identity, rule auth.Rule, typ tsp.TunnelType, l lease.Lease, ep netip.Addr, tok [tsp.TokenLen]byte) (split.TEP, error) {
	srv, ss := b.srv, b.ss
	prev := ss.binding()
	if prev.Session == ss.id && prev.Lease == l.Addr {
		if t, ok := srv.cfg.Remote.Get(prev.TEP); ok {
			return t, nil // a renewal: the tunnel stays where it is
		}
	}
	need := split.NeedDTLS
	if typ == tsp.TypeV4V6 {
		need = split.NeedPlain
	}
	t, err := srv.cfg.Remote.Pick(need, rule.TEP, ss.id)
	if err != nil {
		return split.TEP{}, statusErr(tsp.StatusServerTooBusy, fmt.Errorf("%w (tunnel type %s)", err, typ))
	}
	nb := split.Binding{Lease: l.Addr, Session: ss.id, Identity: id.Name, Groups: id.Groups, TEP: t.Name, Endpoint: ep}
	if typ.Extended() {
		nb.TokenHash = split.HashToken(tok[:])
	}
	var old *split.Binding
	if prev.Session != "" {
		old = &prev
	}
	if err := srv.cfg.Remote.Bind(ctx, nb, old); err != nil {
		return split.TEP{}, statusErr(tsp.StatusServerTooBusy, err)
	}
	if !ss.bind(nb) {
		_ = srv.cfg.Remote.Unbind(ctx, nb)
		return split.TEP{}, statusErr(tsp.StatusServerTooBusy, errEnded)
	}
	ss.log.Info().Str("tep", t.Name).Str("tep_v6", t.IPv6.String()).Str("lease_v4", l.Addr.String()).Int("tep_load", t.Load).Msg("session bound to a TEP")
	return t, nil
}

// resume moves this control connection onto the earlier session that issued token (the
// client's old connection died with its network while its DTLS data channel roamed). An
// unknown token is no error: the create goes on as a new session.
func (b *backend) resume(id tsp.Identity, token [tsp.TokenLen]byte) error {
	srv, cur := b.srv, b.ss
	old := srv.sessions.byTokenGet(token)
	if old == nil || old == cur {
		return nil
	}
	old.mu.Lock()
	owner, closed, prevClose := old.identity.Name, old.closed, old.closeCtl
	old.mu.Unlock()
	if owner != id.Name || closed {
		return statusErr(tsp.StatusAuthenticationFailed, fmt.Errorf("data token of session %s does not belong to %q", old.id, id.Name))
	}
	b.ss, b.gen = old, srv.sessions.adopt(old, cur)
	if prevClose != nil {
		prevClose() // the previous control connection, if it still lingers
	}
	remote, _ := cur.source()
	old.log.Info().Str("remote", remote.String()).Msg("session resumed on a new control connection")
	return nil
}

// lease offers a new lease or renews the session's current one.
func (b *backend) lease(ctx context.Context, id tsp.Identity, rule auth.Rule, typ tsp.TunnelType, ep netip.Addr) (lease.Lease, error) {
	srv, ss := b.srv, b.ss
	_, _, cur, _ := ss.tspState()
	start := time.Now()
	var l lease.Lease
	var err error
	if cur.Addr.IsValid() && cur.State == lease.StateActive {
		l, err = srv.cfg.Leases.Renew(ctx, cur.Addr, ss.id)
	} else {
		l, err = srv.cfg.Leases.Offer(ctx, lease.Request{
			Identity: id.Name, Pool: rule.Pool, Session: ss.id, Endpoint: ep,
			Transport: string(typ), MaxSessions: rule.MaxSessions,
		})
	}
	srv.cfg.Metrics.ObserveAllocation(time.Since(start))
	if err != nil {
		return lease.Lease{}, leaseStatus(err)
	}
	return l, nil
}

func leaseStatus(err error) error {
	switch {
	case errors.Is(err, lease.ErrPoolExhausted), errors.Is(err, lease.ErrSessionLimit):
		return statusErr(tsp.StatusNoMoreTunnels, err)
	case errors.Is(err, lease.ErrInvalidIdentity):
		return statusErr(tsp.StatusAuthenticationFailed, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, lease.ErrStoreUnavailable):
		return statusErr(tsp.StatusServerTooBusy, err)
	}
	return statusErr(tsp.StatusServerError, err)
}

// Accept activates the lease with the chosen data transport and attaches the data plane.
func (b *backend) Accept(ctx context.Context, id tsp.Identity, offer *tsp.Tunnel, data tsp.TunnelType) error {
	srv, ss := b.srv, b.ss
	_, _, cur, _ := ss.tspState()
	l, err := srv.cfg.Leases.Accept(ctx, cur.Addr, ss.id, string(data))
	if err != nil {
		return leaseStatus(err)
	}
	ss.accepted(l)
	if srv.cfg.Remote != nil {
		if err := b.acceptRemote(ctx, data); err != nil {
			return err
		}
	} else if err := srv.attachData(ss, data); err != nil {
		return statusErr(tsp.StatusServerError, err)
	}
	ss.log.Info().Str("identity", id.Name).Str("lease_v4", l.Addr.String()).Str("transport", string(data)).
		Time("expires", l.Expires).Msg("tunnel established")
	return nil
}

// Delete ends the session's tunnel at the client's request.
func (b *backend) Delete(ctx context.Context, id tsp.Identity) error {
	b.srv.detachData(ctx, b.ss, lease.ReasonClosed)
	return nil
}

// acceptRemote tells the session's TEP node the transport accepted: the v4v6 tunnel is set
// up there, the lease announced.
func (b *backend) acceptRemote(ctx context.Context, data tsp.TunnelType) error {
	srv, ss := b.srv, b.ss
	nb := ss.binding()
	if nb.Session == "" {
		return statusErr(tsp.StatusServerError, errors.New("accept without a TEP binding"))
	}
	nb.Transport = string(data)
	if err := srv.cfg.Remote.Bind(ctx, nb, nil); err != nil {
		return statusErr(tsp.StatusServerTooBusy, err)
	}
	if !ss.bind(nb) {
		return statusErr(tsp.StatusServerError, errEnded)
	}
	if data == tsp.TypeV4V6 {
		srv.sessions.setPlain(ss, nb.Endpoint)
	}
	return nil
}
