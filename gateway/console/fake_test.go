package console

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/events"
)

// fakeBackend is a small working gateway in memory: sessions, leases of one pool,
// certificates by identity, revocation that closes the sessions of what it revokes, tokens
// and events.
type fakeBackend struct {
	mu       sync.Mutex
	now      func() time.Time
	sessions []admin.Session
	certs    []certs.Certificate
	seen     map[string]time.Time
	evs      []events.Event
	kicked   []string
	revoked  []string // targets
	tokens   []string // identities
}

var _ Backend = (*fakeBackend)(nil)

func newFakeBackend(now func() time.Time) *fakeBackend {
	t0 := now()
	b := &fakeBackend{now: now, seen: map[string]time.Time{}}
	b.certs = []certs.Certificate{
		{Serial: "1001", Identity: "alice@corp.example", NotBefore: t0.Add(-48 * time.Hour), NotAfter: t0.Add(24 * time.Hour)},
		{Serial: "1002", Identity: "alice@corp.example", NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(23 * time.Hour)},
		{Serial: "2001", Identity: "bob@corp.example", NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(23 * time.Hour)},
		// 1002's device renewed it; its session still runs on 1002.
		{Serial: "1003", Identity: "alice@corp.example", NotBefore: t0.Add(-10 * time.Minute), NotAfter: t0.Add(24*time.Hour - 10*time.Minute), RenewalOf: "1002"},
	}
	b.seen["1001"] = t0.Add(-3 * time.Hour)
	b.sessions = []admin.Session{
		{ID: "s-aaaa", Identity: "alice@corp.example", Lease: "100.64.0.2", Transport: "v4dtlsv6", Endpoint: "[2001:db8::2]:40000",
			Mechanism: "EXTERNAL", Serial: "1002", Since: t0.Add(-5 * time.Minute), BytesIn: 1000, BytesOut: 50000},
		{ID: "s-bbbb", Identity: "bob@corp.example", Lease: "100.64.0.3", Transport: "v4tlsv6", Endpoint: "2001:db8::3",
			Mechanism: "EXTERNAL", Serial: "2001", Since: t0.Add(-time.Minute), BytesIn: 10, BytesOut: 20},
	}
	b.evs = []events.Event{{Time: t0.Add(-time.Minute), Kind: events.Granted, Identity: "bob@corp.example", Session: "s-bbbb", Lease: "100.64.0.3"}}
	return b
}

func (b *fakeBackend) Leases(context.Context) ([]admin.Lease, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []admin.Lease
	for _, s := range b.sessions {
		out = append(out, admin.Lease{Addr: s.Lease, Pool: "default", Identity: s.Identity, State: "active", Session: s.ID, Transport: s.Transport})
	}
	return out, nil
}

func (b *fakeBackend) Sessions(context.Context) ([]admin.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sessions), nil
}

func (b *fakeBackend) Kick(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.IndexFunc(b.sessions, func(s admin.Session) bool { return s.ID == id })
	if i < 0 {
		return fmt.Errorf("%w: no session %q", admin.ErrNotFound, id)
	}
	b.sessions = slices.Delete(b.sessions, i, i+1)
	b.kicked = append(b.kicked, id)
	return nil
}

func (b *fakeBackend) Revoke(_ context.Context, target string) (admin.RevokeResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var res admin.RevokeResult
	for i, c := range b.certs {
		if (c.Serial == target || c.Identity == target) && !c.Revoked {
			b.certs[i].Revoked, b.certs[i].RevokedAt = true, b.now()
			res.Serials = append(res.Serials, c.Serial)
		}
	}
	if len(res.Serials) == 0 {
		return res, fmt.Errorf("%w: nothing to revoke for %q", admin.ErrNotFound, target)
	}
	b.sessions = slices.DeleteFunc(b.sessions, func(s admin.Session) bool {
		if slices.Contains(res.Serials, s.Serial) {
			res.Sessions++
			return true
		}
		return false
	})
	b.revoked = append(b.revoked, target)
	return res, nil
}

func (b *fakeBackend) Token(_ context.Context, identity string, ttl time.Duration) (admin.TokenResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ttl == 0 {
		ttl = time.Hour
	}
	b.tokens = append(b.tokens, identity)
	return admin.TokenResult{Token: "tok-" + identity, Identity: identity, Fingerprint: "ab12", Expires: b.now().Add(ttl)}, nil
}

func (b *fakeBackend) Status(context.Context) (admin.Status, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := uint64(len(b.sessions))
	return admin.Status{Version: "test", Started: b.now().Add(-time.Hour), Listen: []string{"tcp [::]:3653"}, Sessions: len(b.sessions),
		Pools: []admin.PoolStatus{{Name: "default", Ranges: []string{"100.64.0.0/24"}, Size: 253, Active: n, Free: 253 - n}}}, nil
}

func (b *fakeBackend) Events(n int) []events.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Clone(b.evs)
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

func (b *fakeBackend) Certificates(_ context.Context, identity string) ([]certs.Certificate, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []certs.Certificate
	for _, c := range b.certs {
		if c.Identity == identity {
			out = append(out, c)
		}
	}
	return out, nil
}

func (b *fakeBackend) Certificate(_ context.Context, serial string) (certs.Certificate, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.certs {
		if c.Serial == serial {
			return c, nil
		}
	}
	return certs.Certificate{}, fmt.Errorf("%w: serial %s", admin.ErrNotFound, serial)
}

func (b *fakeBackend) LastSeen(serial string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.seen[serial]
	return t, ok
}

func (b *fakeBackend) actions() (kicked, revoked, tokens []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.kicked), slices.Clone(b.revoked), slices.Clone(b.tokens)
}
