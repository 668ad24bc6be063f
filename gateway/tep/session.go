package tep

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

// SessionInfo describes a session when it is added.
type SessionInfo struct {
	ID        string         // TSP session id (log field "session")
	Identity  string         // authenticated identity
	Groups    []string       // policy groups of its certificate
	Lease     netip.Addr     // leased IPv4 address; must lie in a pool
	Transport string         // tunnel.Plain, tunnel.DTLS or tunnel.TLS
	MTU       int            // inner MTU (DefaultMTU when zero, at most Config.MTU)
	Endpoint  netip.AddrPort // client's outer IPv6 endpoint, if known
}

// SessionSnapshot is the state of one session for listings.
type SessionSnapshot struct {
	ID, Identity string
	Lease        netip.Addr
	Transport    string
	Endpoint     netip.AddrPort
	MTU          int
	In, Out      Counter // In: tunnel → TUN; Out: TUN → tunnel
	Since        time.Time
}

// Session is one client's data path and the tunnel.Receiver of its links.
// Its queue towards the tunnel and its writer goroutine exist only while it
// has packets to send (see outQueue): an idle session has neither.
type Session struct {
	tep     *TEP
	info    SessionInfo
	lease   [4]byte
	mtu     int
	mss     uint16
	since   time.Time
	link    atomic.Pointer[linkRef] // nil when none is attached
	oqMu    sync.Mutex
	oq      outQueue
	writers sync.WaitGroup // the writer goroutine, while one runs
	closed  atomic.Bool    // set under tep.reg.mu when the session is removed
	lastIn  atomic.Int64   // unix nanoseconds of the last batch from the tunnel (or of AddSession)
	in      counter
	out     counter
	rules   atomic.Pointer[sessionRules] // nil: no access control
	// guarded by tep.reg.mu
	tr       int
	base     Traffic
	endpoint netip.AddrPort
}

// linkRef is the attached link; direct is the same link when it is a tunnel.DirectWriter,
// asserted once in SetLink so that the TUN reader does not assert per packet.
type linkRef struct {
	l      tunnel.Link
	direct tunnel.DirectWriter
}

var _ tunnel.Receiver = (*Session)(nil)

// AddSession registers a session for info.Lease; until its first SetLink,
// packets to the lease are dropped as link_error. It fails with
// ErrLeaseInUse if the lease already has a session.
func (t *TEP) AddSession(info SessionInfo) (*Session, error) {
	if !info.Lease.Is4() || !t.inPool(info.Lease) {
		return nil, fmt.Errorf("%w: %v", ErrNotInPool, info.Lease)
	}
	mtu := info.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < minMTU || mtu > t.cfg.MTU {
		return nil, fmt.Errorf("tep: session MTU %d outside %d..%d", mtu, minMTU, t.cfg.MTU)
	}
	s := &Session{
		tep: t, info: info, lease: info.Lease.As4(), mtu: mtu, mss: packet.MSSForMTU(mtu),
		since: t.cfg.Now(), tr: transportIndex(info.Transport), endpoint: info.Endpoint,
	}
	s.lastIn.Store(s.since.UnixNano())
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if !t.reg.addLocked(s) {
		return nil, fmt.Errorf("%w: %v", ErrLeaseInUse, info.Lease)
	}
	t.applyAccessLocked(s)
	s.debug().Msg("session added")
	return s, nil
}

// RemoveSession removes the session of lease if its ID is id, stops its
// writer and drops what is queued. It does not close the link.
func (t *TEP) RemoveSession(lease netip.Addr, id string) {
	t.reg.mu.Lock()
	s := t.reg.lookup(lease)
	if s == nil || s.info.ID != id || !t.removeLocked(s) {
		t.reg.mu.Unlock()
		return
	}
	t.reg.mu.Unlock()
	s.stopQueue()
	s.debug().Msg("session removed")
}

// debug returns a debug event with the session's fields, or nil when debug
// logging is off.
func (s *Session) debug() *zerolog.Event {
	e := s.tep.log.Debug()
	if e == nil {
		return nil
	}
	return e.Str("session", s.info.ID).Str("identity", s.info.Identity).
		Stringer("lease_v4", s.info.Lease).Str("transport", s.info.Transport)
}

func (t *TEP) removeLocked(s *Session) bool {
	if !t.reg.removeLocked(s) {
		return false
	}
	s.closed.Store(true)
	t.retired[s.tr] = t.retired[s.tr].plus(s.trafficSinceSwitchLocked())
	return true
}

// Session returns the session of lease, or nil.
func (t *TEP) Session(lease netip.Addr) *Session {
	if !lease.Is4() {
		return nil
	}
	return t.reg.lookup(lease)
}

// Sessions returns a snapshot of every session.
func (t *TEP) Sessions() []SessionSnapshot {
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	all := t.reg.allLocked()
	out := make([]SessionSnapshot, 0, len(all))
	for _, s := range all {
		out = append(out, s.snapshotLocked())
	}
	return out
}

func (s *Session) snapshotLocked() SessionSnapshot {
	tr := s.info.Transport
	if s.tr != trOther {
		tr = transportNames[s.tr]
	}
	return SessionSnapshot{
		ID: s.info.ID, Identity: s.info.Identity, Lease: s.info.Lease, Transport: tr,
		Endpoint: s.endpoint, MTU: s.mtu, In: s.in.load(), Out: s.out.load(), Since: s.since,
	}
}

// Info returns what the session was added with.
func (s *Session) Info() SessionInfo { return s.info }

// LastReceive returns when the session last received packets from its tunnel (when it was
// added, if never).
func (s *Session) LastReceive() time.Time { return time.Unix(0, s.lastIn.Load()) }

// MTU returns the session's inner MTU (to announce in the offer).
func (s *Session) MTU() int { return s.mtu }

// SetLink attaches l as the session's outside, replacing the previous link
// (transport fallback, roaming) without closing it; the link's transport and
// endpoint become the session's. nil detaches: packets are then dropped as
// link_error. On a removed session SetLink does nothing.
func (s *Session) SetLink(l tunnel.Link) {
	if l == nil {
		s.link.Store(nil)
		return
	}
	t := s.tep
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	if s.closed.Load() {
		return // traffic already retired
	}
	if tr := transportIndex(l.Transport()); tr != s.tr {
		t.retired[s.tr] = t.retired[s.tr].plus(s.trafficSinceSwitchLocked())
		s.base = s.trafficLocked()
		s.tr = tr
	}
	s.endpoint = l.Endpoint()
	ref := &linkRef{l: l}
	ref.direct, _ = l.(tunnel.DirectWriter)
	s.link.Store(ref)
}

func (s *Session) trafficLocked() Traffic { return Traffic{In: s.in.load(), Out: s.out.load()} }

func (s *Session) trafficSinceSwitchLocked() Traffic {
	cur := s.trafficLocked()
	return Traffic{In: cur.In.sub(s.base.In), Out: cur.Out.sub(s.base.Out)}
}
