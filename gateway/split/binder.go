package split

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/tunnel"
)

// PlainTransport is the v4v6 transport as a TEP node uses it (*plain.Server).
type PlainTransport interface {
	Register(endpoint netip.Addr, r tunnel.Receiver) (tunnel.Link, error)
}

// BinderConfig configures a TEP node's Binder.
type BinderConfig struct {
	TEP   *tep.TEP
	Plain PlainTransport // nil: v4v6 is not served
	// MTU is the inner MTU of a data transport (the one the control node put in the offer).
	MTU func(transport string) int
	Log zerolog.Logger
}

// Binder is a TEP node's data plane admission: it applies the bindings Follow delivers to
// the TEP (entries, plain links) and binds DTLS channels to bound sessions by their data
// token. It implements Bindings.
type Binder struct {
	cfg     BinderConfig
	changed chan struct{} // one pending signal: the active set changed

	mu      sync.Mutex
	fenced  bool // the ownership is lost: nothing is bound until Unfence
	byLease map[netip.Addr]*bound
	byToken map[string]*bound
	refused atomic.Uint64 // DTLS binds refused
}

// bound is one binding and what the TEP serves for it.
type bound struct {
	b    Binding
	data *tep.Session // nil until a data channel exists
	link tunnel.Link  // closed by the Binder
}

var _ Bindings = (*Binder)(nil)

// NewBinder returns an empty Binder.
func NewBinder(cfg BinderConfig) *Binder {
	return &Binder{
		cfg: cfg, changed: make(chan struct{}, 1),
		byLease: map[netip.Addr]*bound{}, byToken: map[string]*bound{},
	}
}

// Changed delivers after the set of active bindings changed (the route announcer's cue).
func (bd *Binder) Changed() <-chan struct{} { return bd.changed }

func (bd *Binder) signal() {
	select {
	case bd.changed <- struct{}{}:
	default:
	}
}

// Sync implements Bindings.
func (bd *Binder) Sync(all []Binding) {
	want := make(map[netip.Addr]Binding, len(all))
	for _, b := range all {
		want[b.Lease] = b
	}
	bd.mu.Lock()
	var gone []*bound
	for addr, cur := range bd.byLease {
		if b, ok := want[addr]; !ok || b.Session != cur.b.Session {
			gone = append(gone, bd.removeLocked(cur))
		}
	}
	bd.mu.Unlock()
	bd.teardown(gone, "binding gone")
	for _, b := range all {
		bd.Put(b)
	}
	bd.signal()
}

// Put implements Bindings: a new session's binding replaces the lease's previous one; a
// v4v6 session gets its plain link once accepted.
func (bd *Binder) Put(b Binding) {
	bd.mu.Lock()
	if bd.fenced {
		bd.mu.Unlock()
		return
	}
	var gone []*bound
	cur := bd.byLease[b.Lease]
	if cur != nil && cur.b.Session != b.Session {
		gone = append(gone, bd.removeLocked(cur))
		cur = nil
	}
	if cur == nil {
		cur = &bound{b: b}
		bd.byLease[b.Lease] = cur
		bd.cfg.Log.Info().Str("session", b.Session).Str("identity", b.Identity).Str("lease_v4", b.Lease.String()).
			Str("control", b.Control).Msg("session bound to this TEP")
	}
	wasActive := cur.b.Active()
	if cur.b.TokenHash != b.TokenHash {
		delete(bd.byToken, cur.b.TokenHash)
	}
	cur.b = b
	if b.TokenHash != "" {
		bd.byToken[b.TokenHash] = cur
	}
	var err error
	if b.Transport == tunnel.Plain && cur.link == nil {
		err = bd.plainLocked(cur)
	}
	bd.mu.Unlock()
	bd.teardown(gone, "another session took the lease")
	if err != nil {
		bd.cfg.Log.Warn().Err(err).Str("session", b.Session).Str("lease_v4", b.Lease.String()).Msg("v4v6 tunnel not set up")
	}
	if wasActive != b.Active() {
		bd.signal()
	}
}

// plainLocked attaches the plain link of an accepted v4v6 session.
func (bd *Binder) plainLocked(cur *bound) error {
	if bd.cfg.Plain == nil {
		return errors.New("this TEP does not serve v4v6")
	}
	if !cur.b.Endpoint.IsValid() {
		return errors.New("no client endpoint in the binding")
	}
	ts, err := bd.entryLocked(cur, tunnel.Plain)
	if err != nil {
		return err
	}
	l, err := bd.cfg.Plain.Register(cur.b.Endpoint, ts)
	if err != nil {
		return fmt.Errorf("register plain endpoint %s: %w", cur.b.Endpoint, err)
	}
	cur.link = l
	ts.SetLink(l)
	bd.cfg.Log.Info().Str("session", cur.b.Session).Str("transport", tunnel.Plain).Str("client_v6", cur.b.Endpoint.String()).Msg("data channel bound")
	return nil
}

// entryLocked returns the TEP entry of cur, adding it with transport's MTU on first use.
func (bd *Binder) entryLocked(cur *bound, transport string) (*tep.Session, error) {
	if cur.data != nil {
		return cur.data, nil
	}
	ts, err := bd.cfg.TEP.AddSession(tep.SessionInfo{
		ID: cur.b.Session, Identity: cur.b.Identity, Groups: cur.b.Groups, Lease: cur.b.Lease, Transport: transport,
		MTU: bd.cfg.MTU(transport), Endpoint: netip.AddrPortFrom(cur.b.Endpoint, 0),
	})
	if err != nil {
		return nil, err
	}
	cur.data = ts
	return ts, nil
}

// Delete implements Bindings.
func (bd *Binder) Delete(lease netip.Addr) {
	bd.mu.Lock()
	cur := bd.byLease[lease]
	var gone []*bound
	if cur != nil {
		gone = append(gone, bd.removeLocked(cur))
	}
	bd.mu.Unlock()
	bd.teardown(gone, "binding deleted")
}

func (bd *Binder) removeLocked(cur *bound) *bound {
	delete(bd.byLease, cur.b.Lease)
	if bd.byToken[cur.b.TokenHash] == cur {
		delete(bd.byToken, cur.b.TokenHash)
	}
	return cur
}

// teardown removes what the TEP served for bindings that are gone.
func (bd *Binder) teardown(gone []*bound, why string) {
	for _, cur := range gone {
		if cur.link != nil {
			cur.link.Close()
		}
		if cur.data != nil {
			bd.cfg.TEP.RemoveSession(cur.b.Lease, cur.b.Session)
		}
		bd.cfg.Log.Info().Str("session", cur.b.Session).Str("lease_v4", cur.b.Lease.String()).Str("reason", why).Msg("session unbound from this TEP")
	}
	if len(gone) > 0 {
		bd.signal()
	}
}

// Fence ends every session and binds none until Unfence: the TEP's ownership is lost, the
// control nodes move its sessions elsewhere.
func (bd *Binder) Fence() int {
	bd.mu.Lock()
	bd.fenced = true
	gone := make([]*bound, 0, len(bd.byLease))
	for _, cur := range bd.byLease {
		gone = append(gone, bd.removeLocked(cur))
	}
	bd.mu.Unlock()
	bd.teardown(gone, "ownership lost")
	return len(gone)
}

// Unfence lets bindings in again (the caller then makes Follow read them again).
func (bd *Binder) Unfence() {
	bd.mu.Lock()
	bd.fenced = false
	bd.mu.Unlock()
}

// BindDTLS attaches an authenticated DTLS link to the bound session whose data token the
// client sent; it is the DTLS server's bind function on a TEP node.
func (bd *Binder) BindDTLS(_ context.Context, token []byte, cert *x509.Certificate, remote netip.AddrPort, link tunnel.Link) (tunnel.Receiver, error) {
	r, err := bd.bindDTLS(token, cert, link)
	if err != nil {
		bd.refused.Add(1)
		bd.cfg.Log.Info().Err(err).Str("client_v6", remote.String()).Str("reason", "DTLS data channel refused").Msg("DTLS bind refused")
		return nil, err
	}
	return r, nil
}

func (bd *Binder) bindDTLS(token []byte, cert *x509.Certificate, link tunnel.Link) (tunnel.Receiver, error) {
	id, err := auth.IdentityFromCertificate(cert)
	if err != nil {
		return nil, err
	}
	bd.mu.Lock()
	cur := bd.byToken[HashToken(token)]
	if cur == nil || len(token) == 0 {
		bd.mu.Unlock()
		return nil, errors.New("unknown data token: no session bound to this TEP issued it")
	}
	if id.Name != cur.b.Identity {
		bd.mu.Unlock()
		return nil, fmt.Errorf("DTLS identity %q does not own session %s (%q)", id.Name, cur.b.Session, cur.b.Identity)
	}
	ts, err := bd.entryLocked(cur, tunnel.DTLS)
	if err != nil {
		bd.mu.Unlock()
		return nil, fmt.Errorf("session %s: %w", cur.b.Session, err)
	}
	old := cur.link
	cur.link = link
	ts.SetLink(link)
	b := cur.b
	bd.mu.Unlock()
	if old != nil {
		old.Close()
	}
	bd.cfg.Log.Info().Str("session", b.Session).Str("transport", tunnel.DTLS).Str("client_v6", link.Endpoint().String()).Msg("data channel bound")
	go bd.unlinkWhenDone(cur, link)
	return ts, nil
}

// unlinkWhenDone detaches a DTLS link from its session when it ends; the binding stays and
// the client may bind a new link.
func (bd *Binder) unlinkWhenDone(cur *bound, l tunnel.Link) {
	<-l.Done()
	bd.mu.Lock()
	defer bd.mu.Unlock()
	if cur.link != l {
		return
	}
	cur.link = nil
	if cur.data != nil {
		cur.data.SetLink(nil)
	}
}

// Routes returns the /32 of every active binding (what a TEP announces by BGP in leases
// mode).
func (bd *Binder) Routes() []netip.Prefix {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	out := make([]netip.Prefix, 0, len(bd.byLease))
	for addr, cur := range bd.byLease {
		if cur.b.Active() {
			out = append(out, netip.PrefixFrom(addr, 32))
		}
	}
	return out
}

// Stats counts the bindings and the DTLS binds refused.
type Stats struct {
	Bound, Active int
	Refused       uint64
}

// Stats returns the Binder's counts.
func (bd *Binder) Stats() Stats {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	st := Stats{Bound: len(bd.byLease), Refused: bd.refused.Load()}
	for _, cur := range bd.byLease {
		if cur.b.Active() {
			st.Active++
		}
	}
	return st
}
