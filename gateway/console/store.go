package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// Sign-in methods of a console session.
const (
	MethodSSO         = "sso"
	MethodCertificate = "certificate"
)

// Session limits: a session ends after idleTimeout without a request, and lifetime after its
// sign-in at the latest. At most maxSessions live at once (beyond, the least recently used
// goes) and maxPending sign-ins in progress (beyond, the oldest goes: anyone can start one).
const (
	idleTimeout    = 30 * time.Minute
	lifetime       = 8 * time.Hour
	maxSessions    = 10000
	maxPending     = 1000
	pendingTimeout = 10 * time.Minute
)

// session is a signed-in browser. Values are copies: the store owns the originals.
type session struct {
	id       string // the cookie's value: 256 random bits
	csrf     string // the synchronizer token of every form: 256 random bits
	identity string
	method   string // MethodSSO or MethodCertificate
	ssoAdmin bool   // the provider put the user in sso.admin_groups
	created  time.Time
	used     time.Time
}

// pending is a sign-in between the redirect to the provider and its callback.
type pending struct {
	state    string // also the login cookie's value
	nonce    string
	verifier string // PKCE code verifier
	next     string // local path to go to afterwards
	created  time.Time
}

// store keeps the sessions and pending sign-ins in memory. Safe for concurrent use.
type store struct {
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]*session
	pendings map[string]*pending
}

func newStore(now func() time.Time) *store {
	return &store{now: now, sessions: map[string]*session{}, pendings: map[string]*pending{}}
}

// randomToken returns 256 random bits, base64url without padding.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create starts a session for identity.
func (s *store) create(identity, method string, ssoAdmin bool) session {
	now := s.now()
	ss := &session{id: randomToken(), csrf: randomToken(), identity: identity, method: method,
		ssoAdmin: ssoAdmin, created: now, used: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= maxSessions {
		s.sweepLocked(now)
	}
	if len(s.sessions) >= maxSessions {
		var lru *session
		for _, o := range s.sessions {
			if lru == nil || o.used.Before(lru.used) {
				lru = o
			}
		}
		delete(s.sessions, lru.id)
	}
	s.sessions[ss.id] = ss
	return *ss
}

// errExpired and errNoSession are why get found no session.
var (
	errNoSession = errors.New("no session")
	errExpired   = errors.New("session expired")
)

// get returns the live session id and marks it used; an expired one is removed.
func (s *store) get(id string) (session, error) {
	if id == "" {
		return session{}, errNoSession
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	if !ok {
		return session{}, errNoSession
	}
	if expired(ss, now) {
		delete(s.sessions, id)
		return session{}, errExpired
	}
	ss.used = now
	return *ss, nil
}

func expired(ss *session, now time.Time) bool {
	return now.Sub(ss.used) >= idleTimeout || now.Sub(ss.created) >= lifetime
}

// remove ends a session.
func (s *store) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, id)
}

// sweepLocked drops the expired sessions and sign-ins.
func (s *store) sweepLocked(now time.Time) {
	for id, ss := range s.sessions {
		if expired(ss, now) {
			delete(s.sessions, id)
		}
	}
	for st, p := range s.pendings {
		if now.Sub(p.created) >= pendingTimeout {
			delete(s.pendings, st)
		}
	}
}

// sweep drops what expired (called now and then, so that abandoned sessions go).
func (s *store) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.now())
}

// begin records a sign-in in progress.
func (s *store) begin(next string) pending {
	now := s.now()
	p := &pending{state: randomToken(), nonce: randomToken(), verifier: oauth2.GenerateVerifier(), next: next, created: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pendings) >= maxPending {
		s.sweepLocked(now)
	}
	if len(s.pendings) >= maxPending {
		var oldest *pending
		for _, o := range s.pendings {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(s.pendings, oldest.state)
	}
	s.pendings[p.state] = p
	return *p
}

// finish takes the sign-in of state, once: the provider's redirect carries state, the
// browser's login cookie cookieState, and both must match.
func (s *store) finish(state, cookieState string) (pending, bool) {
	if state == "" || subtle.ConstantTimeCompare([]byte(state), []byte(cookieState)) != 1 {
		return pending{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pendings[state]
	if !ok {
		return pending{}, false
	}
	delete(s.pendings, state)
	if s.now().Sub(p.created) >= pendingTimeout {
		return pending{}, false
	}
	return *p, true
}

// counts returns the live sessions and pending sign-ins (for tests and metrics).
func (s *store) counts() (sessions, pendings int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions), len(s.pendings)
}
