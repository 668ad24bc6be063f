package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
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
// goes). A sign-in in progress is kept nowhere but in its login cookie, sealed with the
// store's key, for pendingTimeout: anyone can start sign-ins, and none pushes out another's.
const (
	idleTimeout    = 30 * time.Minute
	lifetime       = 8 * time.Hour
	maxSessions    = 10000
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
	state    string // the state parameter; the provider's redirect must carry it back
	nonce    string
	verifier string // PKCE code verifier
	next     string // local path to go to afterwards
	created  time.Time
	cookie   string // all of the above, sealed: the login cookie's value
}

// sealedPending is a pending sign-in as its login cookie holds it.
type sealedPending struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"x"`
	Created  int64  `json:"c"` // unix nanoseconds
}

// loginAD binds sealed login cookies to their use.
var loginAD = []byte("dstm console login v1")

// store keeps the sessions in memory. Safe for concurrent use.
type store struct {
	now  func() time.Time
	seal cipher.AEAD // login cookies; its key lives as long as the process

	mu       sync.Mutex
	sessions map[string]*session
}

func newStore(now func() time.Time) *store {
	var key [32]byte
	_, _ = rand.Read(key[:])
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &store{now: now, seal: aead, sessions: map[string]*session{}}
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

// sweepLocked drops the expired sessions.
func (s *store) sweepLocked(now time.Time) {
	for id, ss := range s.sessions {
		if expired(ss, now) {
			delete(s.sessions, id)
		}
	}
}

// sweep drops what expired (called now and then, so that abandoned sessions go).
func (s *store) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.now())
}

// begin starts a sign-in: its secrets, sealed into the value of its login cookie.
func (s *store) begin(next string) pending {
	p := pending{state: randomToken(), nonce: randomToken(), verifier: oauth2.GenerateVerifier(), next: next, created: s.now()}
	b, err := json.Marshal(sealedPending{State: p.state, Nonce: p.nonce, Verifier: p.verifier, Next: p.next, Created: p.created.UnixNano()})
	if err != nil {
		panic(err) // strings and an integer always marshal
	}
	nonce := make([]byte, s.seal.NonceSize(), s.seal.NonceSize()+len(b)+s.seal.Overhead())
	_, _ = rand.Read(nonce)
	p.cookie = base64.RawURLEncoding.EncodeToString(s.seal.Seal(nonce, nonce, b, loginAD))
	return p
}

// finish opens the sign-in of the login cookie: the provider's redirect carries state, and
// it must be the cookie's, within pendingTimeout of the start.
func (s *store) finish(state, cookie string) (pending, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(cookie)
	ns := s.seal.NonceSize()
	if err != nil || state == "" || len(raw) < ns+s.seal.Overhead() || len(raw) > 4096 {
		return pending{}, false
	}
	b, err := s.seal.Open(nil, raw[:ns], raw[ns:], loginAD)
	if err != nil {
		return pending{}, false
	}
	var sp sealedPending
	if json.Unmarshal(b, &sp) != nil || subtle.ConstantTimeCompare([]byte(state), []byte(sp.State)) != 1 {
		return pending{}, false
	}
	p := pending{state: sp.State, nonce: sp.Nonce, verifier: sp.Verifier, next: sp.Next, created: time.Unix(0, sp.Created), cookie: cookie}
	if age := s.now().Sub(p.created); age < 0 || age >= pendingTimeout {
		return pending{}, false
	}
	return p, true
}

// counts returns the live sessions (for tests and metrics).
func (s *store) counts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}
