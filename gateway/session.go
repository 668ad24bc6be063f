package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
)

// session is one client's tunnel session: its TSP control channel, its lease and its data
// link. It lives from the first create until the control connection closes (TCP, TLS), the
// lease ends (UDP control, lease expiry), a kick or a revocation.
type session struct {
	id       string
	control  string         // "tcp", "udp", "tls"
	remote   netip.AddrPort // control channel source
	serial   string         // certificate serial for EXTERNAL sessions
	started  time.Time
	log      zerolog.Logger
	closeCtl func() // closes the control channel (nil for UDP)

	mu        sync.Mutex
	identity  tsp.Identity
	rule      auth.Rule
	lease     lease.Lease // zero until the first offer
	token     [tsp.TokenLen]byte
	transport string // data transport once accepted (or bound)
	endpoint  netip.Addr
	link      tunnel.Link // current data link, if any
	pending   tunnel.Link // DTLS link bound before accept
	closed    bool
	ctlGen    uint64 // bumped when another control connection resumes the session
	detached  bool   // control channel lost; the DTLS data channel carries on
}

func newSessionID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "s-" + hex.EncodeToString(b[:])
}

// snapshot is a consistent copy of what the admin API shows.
type sessionView struct {
	ID, Identity, Mechanism, Control, Transport string
	Lease                                       netip.Addr
	Endpoint                                    netip.Addr
	Remote                                      netip.AddrPort
	Started                                     time.Time
}

func (s *session) view() sessionView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := sessionView{
		ID: s.id, Identity: s.identity.Name, Mechanism: string(s.identity.Mechanism),
		Control: s.control, Transport: s.transport, Lease: s.lease.Addr,
		Endpoint: s.endpoint, Remote: s.remote, Started: s.started,
	}
	// A DTLS link follows a roaming client: its current address is the endpoint.
	if s.link != nil {
		if ap := s.link.Endpoint(); ap.IsValid() {
			v.Endpoint = ap.Addr().Unmap()
		}
	}
	return v
}

// sessions indexes live sessions by id and data token, and counts them per source address.
type sessions struct {
	mu      sync.Mutex
	byID    map[string]*session
	byToken map[[tsp.TokenLen]byte]*session
	perSrc  map[netip.Addr]int
}

func newSessions() *sessions {
	return &sessions{
		byID:    map[string]*session{},
		byToken: map[[tsp.TokenLen]byte]*session{},
		perSrc:  map[netip.Addr]int{},
	}
}

// add registers s unless its source already has max sessions.
func (t *sessions) add(s *session, max int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	src := s.remote.Addr()
	if t.perSrc[src] >= max {
		return false
	}
	t.perSrc[src]++
	t.byID[s.id] = s
	return true
}

func (t *sessions) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[s.id] != s {
		return
	}
	delete(t.byID, s.id)
	src := s.remote.Addr()
	if t.perSrc[src]--; t.perSrc[src] <= 0 {
		delete(t.perSrc, src)
	}
	s.mu.Lock()
	tok := s.token
	s.mu.Unlock()
	if t.byToken[tok] == s {
		delete(t.byToken, tok)
	}
}

// adopt moves the control channel of the fresh session cur onto the earlier session old
// (resumption by data token): cur leaves the table, old is now counted under cur's source.
func (t *sessions) adopt(old, cur *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, cur.id)
	old.mu.Lock()
	prev := old.remote.Addr()
	old.remote, old.control, old.closeCtl = cur.remote, cur.control, cur.closeCtl
	if cur.serial != "" {
		old.serial = cur.serial
	}
	old.detached = false
	old.ctlGen++
	old.mu.Unlock()
	if t.perSrc[prev]--; t.perSrc[prev] <= 0 {
		delete(t.perSrc, prev)
	}
}

func (t *sessions) setToken(s *session, tok [tsp.TokenLen]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byToken[tok] = s
}

func (t *sessions) byTokenGet(tok [tsp.TokenLen]byte) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byToken[tok]
}

func (t *sessions) get(id string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (t *sessions) all() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*session, 0, len(t.byID))
	for _, s := range t.byID {
		out = append(out, s)
	}
	return out
}

// matching returns the sessions of one identity, or of one certificate serial.
func (t *sessions) matching(identity, serial string) []*session {
	var out []*session
	for _, s := range t.all() {
		s.mu.Lock()
		match := (identity != "" && s.identity.Name == identity) || (serial != "" && s.serial == serial)
		s.mu.Unlock()
		if match {
			out = append(out, s)
		}
	}
	return out
}
