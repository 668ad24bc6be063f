package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// fakeBackend is a working in-memory gateway: kicking a session frees its
// lease to held, revoking closes the identity's sessions, tokens are random
// and remembered.
type fakeBackend struct {
	mu       sync.Mutex
	now      func() time.Time
	hold     time.Duration
	ttl      time.Duration // default token TTL
	maxTTL   time.Duration
	leases   map[string]Lease   // by address
	sessions map[string]Session // by ID
	certs    map[string]string  // serial → identity
	revoked  map[string]bool    // serial → revoked
	tokens   map[string]TokenResult
	status   Status
}

var _ Backend = (*fakeBackend)(nil)

var t0 = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

func newFakeBackend() *fakeBackend {
	f := &fakeBackend{
		now:     func() time.Time { return t0.Add(time.Hour) },
		hold:    10 * time.Minute,
		ttl:     5 * time.Minute,
		maxTTL:  24 * time.Hour,
		leases:  map[string]Lease{},
		certs:   map[string]string{"1001": "alice@corp", "1002": "alice@corp", "2001": "bob@corp"},
		revoked: map[string]bool{},
		tokens:  map[string]TokenResult{},
		status: Status{
			Version: "v0.1.0-test", Started: t0, Listen: []string{"tcp [::]:3653", "udp [::]:3653"},
		},
	}
	f.sessions = map[string]Session{}
	for _, s := range fixtureSessions() {
		f.sessions[s.ID] = s
	}
	for _, l := range fixtureLeases() {
		f.leases[l.Addr] = l
	}
	return f
}

func (f *fakeBackend) Leases(context.Context) ([]Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Collect(maps.Values(f.leases)), nil
}

func (f *fakeBackend) Sessions(context.Context) ([]Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Collect(maps.Values(f.sessions)), nil
}

func (f *fakeBackend) Kick(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	f.closeLocked(id)
	return nil
}

// closeLocked ends a session and moves its lease to held.
func (f *fakeBackend) closeLocked(id string) {
	s := f.sessions[id]
	delete(f.sessions, id)
	if l, ok := f.leases[s.Lease]; ok {
		l.State, l.Session, l.Transport, l.Endpoint = "held", "", "", ""
		l.Expires = f.now().Add(f.hold)
		f.leases[s.Lease] = l
	}
}

func (f *fakeBackend) Revoke(_ context.Context, target string) (RevokeResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	identities := map[string]bool{}
	res := RevokeResult{Serials: []string{}}
	for _, serial := range slices.Sorted(maps.Keys(f.certs)) {
		id := f.certs[serial]
		if (serial == target || id == target) && !f.revoked[serial] {
			f.revoked[serial] = true
			identities[id] = true
			res.Serials = append(res.Serials, serial)
		}
	}
	if len(res.Serials) == 0 {
		return RevokeResult{}, fmt.Errorf("no valid certificate for %q: %w", target, ErrNotFound)
	}
	for _, id := range slices.Sorted(maps.Keys(f.sessions)) {
		if identities[f.sessions[id].Identity] {
			f.closeLocked(id)
			res.Sessions++
		}
	}
	return res, nil
}

func (f *fakeBackend) Token(_ context.Context, identity string, ttl time.Duration) (TokenResult, error) {
	if ttl == 0 {
		ttl = f.ttl
	}
	if ttl > f.maxTTL {
		return TokenResult{}, fmt.Errorf("%w: ttl %s exceeds the maximum %s", ErrInvalid, ttl, f.maxTTL)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return TokenResult{}, err
	}
	t := TokenResult{Token: hex.EncodeToString(b), Identity: identity, Fingerprint: "5e8a9c", Expires: f.now().Add(ttl)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[t.Token] = t
	return t, nil
}

func (f *fakeBackend) Status(context.Context) (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	st.Sessions = len(f.sessions)
	st.Pools = f.poolsLocked()
	return st, nil
}

func (f *fakeBackend) poolsLocked() []PoolStatus {
	byName := map[string]*PoolStatus{}
	for _, l := range f.leases {
		p := byName[l.Pool]
		if p == nil {
			p = &PoolStatus{Name: l.Pool, Ranges: []string{"192.0.2.0/24"}, Size: 254}
			byName[l.Pool] = p
		}
		switch {
		case l.Static:
			p.Static++
		case l.State == "active":
			p.Active++
		case l.State == "held":
			p.Held++
		case l.State == "offered":
			p.Offered++
		}
	}
	var out []PoolStatus
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		p := byName[name]
		p.Free = p.Size - p.Offered - p.Active - p.Held - p.Static
		out = append(out, *p)
	}
	return out
}

// errBackend fails every call with err.
type errBackend struct{ err error }

func (e errBackend) Leases(context.Context) ([]Lease, error)     { return nil, e.err }
func (e errBackend) Sessions(context.Context) ([]Session, error) { return nil, e.err }
func (e errBackend) Kick(context.Context, string) error          { return e.err }
func (e errBackend) Revoke(context.Context, string) (RevokeResult, error) {
	return RevokeResult{}, e.err
}
func (e errBackend) Token(context.Context, string, time.Duration) (TokenResult, error) {
	return TokenResult{}, e.err
}
func (e errBackend) Status(context.Context) (Status, error) { return Status{}, e.err }

func fixtureLeases() []Lease {
	return []Lease{
		{Addr: "192.0.2.10", Pool: "corp", Identity: "alice@corp", State: "active", Transport: "v4dtlsv6",
			Session: "s-a1", Endpoint: "[2001:db8::a]:40000", Expires: t0.Add(90 * time.Minute)},
		{Addr: "192.0.2.9", Pool: "corp", Identity: "bob@corp", State: "active", Transport: "v4tlsv6",
			Session: "s-b1", Endpoint: "[2001:db8::b]:3653", Expires: t0.Add(2 * time.Hour)},
		{Addr: "192.0.2.100", Pool: "corp", Identity: "carol@corp", State: "held", Expires: t0.Add(65 * time.Minute)},
		{Addr: "192.0.2.2", Pool: "corp", Identity: "printer@corp", State: "active", Transport: "v4v6",
			Session: "odd/id%1", Endpoint: "2001:db8::2", Static: true},
		{Addr: "198.51.100.7", Pool: "guest", Identity: "guest 1", State: "offered", Expires: t0.Add(59*time.Minute + 30*time.Second)},
	}
}

func fixtureSessions() []Session {
	return []Session{
		{ID: "s-b1", Identity: "bob@corp", Lease: "192.0.2.9", Transport: "v4tlsv6", Endpoint: "[2001:db8::b]:3653",
			Mechanism: "EXTERNAL", Since: t0.Add(-26 * time.Hour), PacketsIn: 1200, PacketsOut: 3400, BytesIn: 98304, BytesOut: 5 << 30},
		{ID: "s-a1", Identity: "alice@corp", Lease: "192.0.2.10", Transport: "v4dtlsv6", Endpoint: "[2001:db8::a]:40000",
			Mechanism: "EXTERNAL", Since: t0.Add(59 * time.Minute), PacketsIn: 3, PacketsOut: 0, BytesIn: 180, BytesOut: 0},
		{ID: "odd/id%1", Identity: "printer@corp", Lease: "192.0.2.2", Transport: "v4v6", Endpoint: "2001:db8::2",
			Mechanism: "PLAIN", Since: t0.Add(-90 * time.Second), PacketsIn: 10, PacketsOut: 10, BytesIn: 1536, BytesOut: 1 << 20},
	}
}
