package control

import (
	"net/netip"
	"sync"

	"github.com/dstmgw/dstm/tsp"
)

// table indexes live sessions by id and data token, and counts them per source address. Its
// lock is taken before a session's, never after.
type table struct {
	mu      sync.Mutex
	byID    map[string]*session
	byToken map[[tsp.TokenLen]byte]*session
	plain   map[netip.Addr]*session // v4v6 sessions by client IPv6 endpoint
	perSrc  map[netip.Addr]int
}

func newTable() *table {
	return &table{
		byID:    map[string]*session{},
		byToken: map[[tsp.TokenLen]byte]*session{},
		plain:   map[netip.Addr]*session{},
		perSrc:  map[netip.Addr]int{},
	}
}

// add registers ss unless its source already has max sessions.
func (t *table) add(ss *session, max int) bool {
	src, _ := ss.source()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.perSrc[src.Addr()] >= max {
		return false
	}
	t.perSrc[src.Addr()]++
	t.byID[ss.id] = ss
	return true
}

func (t *table) remove(ss *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[ss.id] != ss {
		return
	}
	delete(t.byID, ss.id)
	ss.mu.Lock()
	src, tok, ep := ss.remote.Addr(), ss.token, ss.endpoint
	ss.mu.Unlock()
	if t.perSrc[src]--; t.perSrc[src] <= 0 {
		delete(t.perSrc, src)
	}
	if t.byToken[tok] == ss {
		delete(t.byToken, tok)
	}
	if t.plain[ep] == ss {
		delete(t.plain, ep)
	}
}

// setPlain records ss as the v4v6 session of ep, unless ss has left the table.
func (t *table) setPlain(ss *session, ep netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[ss.id] == ss {
		t.plain[ep] = ss
	}
}

func (t *table) plainAt(ep netip.Addr) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.plain[ep]
}

// adopt moves the control channel of cur onto old (resumption by data token): cur leaves the
// table, old is counted under cur's source. It returns old's new generation.
func (t *table) adopt(old, cur *session) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, cur.id)
	gen, prev := old.adopt(cur)
	if t.perSrc[prev]--; t.perSrc[prev] <= 0 {
		delete(t.perSrc, prev)
	}
	return gen
}

func (t *table) setToken(ss *session, tok [tsp.TokenLen]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byToken[tok] = ss
}

func (t *table) byTokenGet(tok [tsp.TokenLen]byte) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byToken[tok]
}

func (t *table) get(id string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (t *table) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

func (t *table) all() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*session, 0, len(t.byID))
	for _, ss := range t.byID {
		out = append(out, ss)
	}
	return out
}

func (t *table) matching(identity, serial string) []*session {
	var out []*session
	for _, ss := range t.all() {
		if ss.matches(identity, serial) {
			out = append(out, ss)
		}
	}
	return out
}
