// Package events keeps what the gateway did lately, in memory, for the web console: a
// bounded ring of events (sessions established and ended, leases lost, certificates revoked,
// failed handshakes) and when each certificate was last seen. Nothing here is persisted: a
// restart starts both empty (the audit trail is the log, docs/logging.md).
package events

import (
	"slices"
	"sync"
	"time"
)

// Kind names an event.
type Kind string

// The kinds of events the gateway records.
const (
	Granted  Kind = "granted"  // a lease became active: a session's tunnel is up
	Expired  Kind = "expired"  // a lease ended by its lifetime or an offer not accepted in time
	Replaced Kind = "replaced" // a newer session of the identity took over (leases.on_limit)
	Ended    Kind = "ended"    // a session ended (Reason: closed, kicked, revoked, …)
	Revoked  Kind = "revoked"  // a certificate was revoked (here or on another gateway)
	// HandshakeFailed: a TLS handshake, client certificate or TSP request was refused before
	// the tunnel was up.
	HandshakeFailed Kind = "handshake-failed"
)

// Kinds lists every kind, in the order the console shows its filters.
var Kinds = []Kind{Granted, Ended, Expired, Replaced, Revoked, HandshakeFailed}

// Event is one thing that happened.
type Event struct {
	Time     time.Time `json:"time"`
	Kind     Kind      `json:"kind"`
	Identity string    `json:"identity,omitempty"`
	Session  string    `json:"session,omitempty"`
	Lease    string    `json:"lease,omitempty"`
	Serial   string    `json:"serial,omitempty"`
	Remote   string    `json:"remote,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

// Ring keeps the newest events of each kind, at most perKind of them: when a kind's share is
// full, its oldest event is dropped (and counted), so that a flood of failed handshakes cannot
// push the granted and revoked events out. Safe for concurrent use; a nil Ring records nothing.
type Ring struct {
	mu      sync.Mutex
	perKind int
	kinds   map[Kind]*fifo
	dropped uint64
}

// fifo is one kind's share: a circular buffer.
type fifo struct {
	buf  []Event
	next int // where the next event goes
	full bool
}

// NewRing returns a ring keeping perKind events of each kind (at least 1).
func NewRing(perKind int) *Ring {
	return &Ring{perKind: max(perKind, 1), kinds: map[Kind]*fifo{}}
}

// Add records e.
func (r *Ring) Add(e Event) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.kinds[e.Kind]
	if f == nil {
		f = &fifo{buf: make([]Event, r.perKind)}
		r.kinds[e.Kind] = f
	}
	if f.full {
		r.dropped++
	}
	f.buf[f.next] = e
	f.next++
	if f.next == len(f.buf) {
		f.next, f.full = 0, true
	}
}

// List returns up to n events (n <= 0: all), newest first.
func (r *Ring) List(n int) []Event {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	var out []Event
	for _, f := range r.kinds {
		if f.full {
			out = append(out, f.buf...)
		} else {
			out = append(out, f.buf[:f.next]...)
		}
	}
	r.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Event) int { return b.Time.Compare(a.Time) })
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// Dropped counts the events dropped from full shares.
func (r *Ring) Dropped() uint64 {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// LastSeen remembers when each certificate (by serial) last carried a session, for at most
// limit serials: beyond, the serial first recorded longest ago is forgotten. Safe for
// concurrent use.
type LastSeen struct {
	mu    sync.Mutex
	limit int
	at    map[string]time.Time
	order []string // serials in the order first recorded (oldest first)
}

// NewLastSeen returns a LastSeen for at most limit serials (at least 1).
func NewLastSeen(limit int) *LastSeen {
	return &LastSeen{limit: max(limit, 1), at: map[string]time.Time{}}
}

// Mark records that serial was seen at t (a later time than the one kept, if any).
func (l *LastSeen) Mark(serial string, t time.Time) {
	if serial == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, ok := l.at[serial]
	if ok {
		if t.After(prev) {
			l.at[serial] = t
		}
		return
	}
	if len(l.order) == l.limit {
		delete(l.at, l.order[0])
		l.order = l.order[1:]
	}
	l.at[serial] = t
	l.order = append(l.order, serial)
}

// Get returns when serial was last seen, if it is remembered.
func (l *LastSeen) Get(serial string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[serial]
	return t, ok
}
