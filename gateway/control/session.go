package control

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/split"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
)

// session is one client's tunnel session: its TSP control channel, its lease and its data
// link. It lives from the first create until the control connection closes (TCP, TLS), the
// lease ends (UDP control, lease expiry), a kick or a revocation.
//
// Every field under mu is written only by the methods in this file, under mu, by one owner:
//   - the control channel (control, remote, serial, closeCtl, gen, detached): the connection
//     that holds the session (newSession, adopt on resumption, controlLost);
//   - the TSP state (identity, rule, lease, endpoint, token, bound): the backend of that
//     connection (offered, accepted, bind), and end;
//   - the data plane (data, link): attach (accept, DTLS bind) and unlink (the link ended);
//   - closed: end, once; afterwards nothing changes.
//
// Other goroutines (lease events, revocations, kicks) only end sessions. The data transport
// is not stored here: the link names its own, and the lease records the accepted one.
type session struct {
	id      string
	started time.Time
	log     zerolog.Logger

	mu       sync.Mutex
	control  string         // "tcp", "udp", "tls"
	remote   netip.AddrPort // control channel source
	serial   string         // certificate serial for EXTERNAL sessions
	closeCtl func()         // closes the control channel (nil for UDP or once lost)
	gen      uint64         // bumped when another control connection resumes the session
	detached bool           // control channel lost; the DTLS data channel carries on

	identity tsp.Identity
	rule     auth.Rule
	lease    lease.Lease // zero until the first offer
	endpoint netip.Addr
	token    [tsp.TokenLen]byte
	bound    split.Binding // on a control node without a TEP: the session's TEP binding

	data *tep.Session // the session's TEP entry, once it has a data channel
	link tunnel.Link  // current data link, owned (closed) by the session

	closed bool
}

func newSessionID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "s-" + hex.EncodeToString(b[:])
}

func (s *Server) newSession(control string, remote netip.AddrPort, serial string, closeCtl func()) *session {
	id := newSessionID()
	return &session{
		id: id, control: control, remote: remote, serial: serial, started: s.now(),
		closeCtl: closeCtl,
		log:      s.log.With().Str("session", id).Str("remote", remote.String()).Str("control", control).Logger(),
	}
}

// offered records the lease offered (or renewed) for a create. An extended tunnel type gets
// the session's data token, issued once; fresh says it was issued now.
func (ss *session) offered(id tsp.Identity, rule auth.Rule, l lease.Lease, endpoint netip.Addr, extended bool) (tok [tsp.TokenLen]byte, fresh bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.identity, ss.rule, ss.lease, ss.endpoint = id, rule, l, endpoint
	if ss.token == ([tsp.TokenLen]byte{}) && extended {
		_, _ = rand.Read(ss.token[:])
		fresh = true
	}
	return ss.token, fresh
}

func (ss *session) accepted(l lease.Lease) {
	ss.mu.Lock()
	ss.lease = l
	ss.mu.Unlock()
}

// binding returns the session's TEP binding (zero: none).
func (ss *session) binding() split.Binding {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.bound
}

// bind records the session's TEP binding; false if the session ended meanwhile (the caller
// then removes what it wrote).
func (ss *session) bind(b split.Binding) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	ss.bound = b
	return true
}

// leaseBusyError says that the TEP entry of a lease belongs to another session.
type leaseBusyError struct {
	addr  netip.Addr
	owner string
}

func (e *leaseBusyError) Error() string {
	return fmt.Sprintf("lease %s already carries session %s", e.addr, e.owner)
}

// errEnded refuses a data channel for a session that ended or has no lease to carry.
var errEnded = errors.New("the session has ended or has no lease to carry")

// dataEntry returns the session's TEP entry, adding one for its lease on first use with the
// transport and MTU given. A lease that already carries another session is an error.
func (ss *session) dataEntry(t *tep.TEP, transport string, mtu int) (*tep.Session, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.data != nil {
		return ss.data, nil
	}
	st := ss.lease.State
	if ss.closed || (st != lease.StateOffered && st != lease.StateActive) {
		return nil, errEnded
	}
	addr := ss.lease.Addr
	if ts := t.Session(addr); ts != nil {
		if ts.Info().ID != ss.id {
			return nil, &leaseBusyError{addr: addr, owner: ts.Info().ID}
		}
		ss.data = ts
		return ts, nil
	}
	ts, err := t.AddSession(tep.SessionInfo{
		ID: ss.id, Identity: ss.identity.Name, Groups: ss.identity.Groups, Lease: addr, Transport: transport,
		MTU: mtu, Endpoint: netip.AddrPortFrom(ss.endpoint, 0),
	})
	if err != nil {
		return nil, err
	}
	ss.data = ts
	return ts, nil
}

// attach makes l the session's data link on its TEP entry ts and returns the link it
// replaces. With errEnded (ts is no longer the session's entry) the caller closes l.
func (ss *session) attach(ts *tep.Session, l tunnel.Link) (old tunnel.Link, err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed || ss.data != ts {
		return nil, errEnded
	}
	old, ss.link = ss.link, l
	ts.SetLink(l)
	if old == l {
		old = nil
	}
	return old, nil
}

// unlink detaches l, which has ended, if it is still the session's link. It reports whether
// it was, and whether the session has no control channel either (nothing is left of it).
func (ss *session) unlink(l tunnel.Link) (mine, orphan bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.link != l {
		return false, false
	}
	ss.link = nil
	if ss.data != nil {
		ss.data.SetLink(nil)
	}
	return true, ss.detached
}

// detachData takes the session's lease and data plane away (the caller releases the lease,
// removes the TEP entry and closes the link): after a delete, and when the session ends.
func (ss *session) detachData() (addr netip.Addr, data *tep.Session, link tunnel.Link, bound split.Binding) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	addr, data, link, bound = ss.lease.Addr, ss.data, ss.link, ss.bound
	ss.lease, ss.link, ss.data, ss.bound = lease.Lease{}, nil, nil, split.Binding{}
	return addr, data, link, bound
}

// controlLost reports, for the ended control connection of generation gen, whether the
// session carries on detached (active lease, live DTLS link) or a newer connection holds it;
// otherwise it must end. An offered lease is not the client's until the accept.
func (ss *session) controlLost(gen uint64) (carriesOn, stale bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.gen != gen {
		return false, true
	}
	if !ss.closed && ss.lease.State == lease.StateActive && ss.link != nil && ss.link.Transport() == tunnel.DTLS {
		ss.detached, ss.closeCtl = true, nil
		return true, false
	}
	return false, false
}

// adopt moves cur's control channel onto ss and returns the new generation and the source
// ss was counted under. The table's lock is held.
func (ss *session) adopt(cur *session) (gen uint64, prevSrc netip.Addr) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	prevSrc = ss.remote.Addr()
	ss.remote, ss.control, ss.closeCtl = cur.remote, cur.control, cur.closeCtl
	if cur.serial != "" {
		ss.serial = cur.serial
	}
	ss.detached = false
	ss.gen++
	return ss.gen, prevSrc
}

// markClosed marks the session ended and returns its control channel's close function; ok
// is false if it had ended already.
func (ss *session) markClosed() (closeCtl func(), ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return nil, false
	}
	ss.closed = true
	return ss.closeCtl, true
}

// lastReceive returns when the data channel last received (the start, without one).
func (ss *session) lastReceive() time.Time {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.data == nil {
		return ss.started
	}
	return ss.data.LastReceive()
}

// state returns what other goroutines decide on, under one lock.
func (ss *session) state() (owner string, l lease.Lease, closed bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.identity.Name, ss.lease, ss.closed
}

func (ss *session) tspState() (tsp.Identity, auth.Rule, lease.Lease, netip.Addr) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.identity, ss.rule, ss.lease, ss.endpoint
}

func (ss *session) source() (netip.AddrPort, string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.remote, ss.control
}

func (ss *session) matches(identity, serial string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return (identity != "" && ss.identity.Name == identity) || (serial != "" && ss.serial == serial)
}

// View is a consistent copy of a session for listings.
type View struct {
	ID, Identity, Mechanism, Control string
	Serial                           string // the client certificate's (EXTERNAL), else ""
	// Transport is the data link's, or, between links, the one the lease was accepted with.
	Transport string
	Lease     netip.Addr
	Endpoint  netip.AddrPort // the data link's peer, else the client's IPv6 endpoint
	Remote    netip.AddrPort // the control channel's source
	Started   time.Time
	TEP       string // the TEP node carrying the data, on a control node without a TEP
}

func (ss *session) view() View {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	v := View{
		ID: ss.id, Identity: ss.identity.Name, Mechanism: string(ss.identity.Mechanism),
		Control: ss.control, Serial: ss.serial, Lease: ss.lease.Addr, Remote: ss.remote, Started: ss.started,
		TEP: ss.bound.TEP,
	}
	if ss.lease.State == lease.StateActive {
		v.Transport = ss.lease.Transport
	}
	if ss.endpoint.IsValid() {
		v.Endpoint = netip.AddrPortFrom(ss.endpoint, 0)
	}
	if ss.link != nil { // a DTLS link follows a roaming client
		v.Transport = ss.link.Transport()
		if ap := ss.link.Endpoint(); ap.IsValid() {
			v.Endpoint = ap
		}
	}
	return v
}
