package tep

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/gateway/packet"
	"github.com/dstmgw/dstm/gateway/tunnel"
)

// SessionInfo describes a session when it is added.
type SessionInfo struct {
	ID        string         // TSP session id (log field "session")
	Identity  string         // authenticated identity
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

// Session is one client's data path. It implements tunnel.Receiver and
// BatchReceiver for the links that carry it.
type Session struct {
	tep    *TEP
	info   SessionInfo
	lease  [4]byte
	mtu    int
	mss    uint16
	since  time.Time
	log    zerolog.Logger
	link   atomic.Pointer[linkRef]
	queue  chan *outBuf
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool
	in     counter
	out    counter
	// guarded by tep.reg.mu
	tr       int
	base     Traffic
	endpoint netip.AddrPort
}

type linkRef struct{ l tunnel.Link }

var _ tunnel.Receiver = (*Session)(nil)

// AddSession registers a session for info.Lease and starts its writer. It
// fails with ErrLeaseInUse if the lease already has a session.
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
		since: t.cfg.Now(), queue: make(chan *outBuf, t.cfg.QueueLen),
		stop: make(chan struct{}), done: make(chan struct{}),
		tr: transportIndex(info.Transport), endpoint: info.Endpoint,
	}
	s.log = t.log.With().Str("session", info.ID).Str("identity", info.Identity).
		Stringer("lease_v4", info.Lease).Str("transport", info.Transport).Logger()
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if !t.reg.addLocked(s) {
		return nil, fmt.Errorf("%w: %v", ErrLeaseInUse, info.Lease)
	}
	go s.routineWriteOutside()
	s.log.Debug().Msg("session added")
	return s, nil
}

// RemoveSession removes the session of lease if its ID is id, stops its
// writer and drops what is queued. It does not close the session's link.
func (t *TEP) RemoveSession(lease netip.Addr, id string) {
	t.reg.mu.Lock()
	s := t.reg.lookup(lease)
	if s == nil || s.info.ID != id || !t.removeLocked(s) {
		t.reg.mu.Unlock()
		return
	}
	t.reg.mu.Unlock()
	s.stopWriter()
	s.log.Debug().Msg("session removed")
}

// removeLocked unregisters s and folds its traffic into the retired totals.
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

// MTU returns the session's inner MTU (to announce in the offer).
func (s *Session) MTU() int { return s.mtu }

// SetLink attaches l as the session's outside, replacing the previous link
// (transport fallback, roaming); nil detaches, and queued packets are then
// dropped as link_error. The previous link is not closed. If l has a
// Transport() string method its value becomes the session's transport, and
// an Endpoint() netip.AddrPort method updates the session's endpoint.
func (s *Session) SetLink(l tunnel.Link) {
	if l == nil {
		s.link.Store(nil)
		return
	}
	t := s.tep
	t.reg.mu.Lock()
	if tl, ok := l.(interface{ Transport() string }); ok {
		if tr := transportIndex(tl.Transport()); tr != s.tr {
			t.retired[s.tr] = t.retired[s.tr].plus(s.trafficSinceSwitchLocked())
			s.base = s.trafficLocked()
			s.tr = tr
		}
	}
	if el, ok := l.(interface{ Endpoint() netip.AddrPort }); ok {
		s.endpoint = el.Endpoint()
	}
	t.reg.mu.Unlock()
	s.link.Store(&linkRef{l})
}

func (s *Session) trafficLocked() Traffic { return Traffic{In: s.in.load(), Out: s.out.load()} }

func (s *Session) trafficSinceSwitchLocked() Traffic {
	cur := s.trafficLocked()
	return Traffic{In: cur.In.sub(s.base.In), Out: cur.Out.sub(s.base.Out)}
}

// stopWriter stops the writer goroutine, waits for it and recycles what is
// still queued.
func (s *Session) stopWriter() {
	close(s.stop)
	<-s.done
	for {
		select {
		case ob := <-s.queue:
			s.tep.putOut(ob)
		default:
			return
		}
	}
}
