package dtls

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/netip"
	"sync/atomic"
	"time"
)

// cookieRotation is how long a secret signs new cookies; the previous secret is still
// accepted, so a cookie is valid for between one and two rotations.
const cookieRotation = 2 * time.Minute

// cookieSecrets are the secret of one generation and of the one before it.
type cookieSecrets struct {
	gen       int64
	cur, prev [32]byte
	hasPrev   bool // prev is generation gen-1
}

// cookies makes and checks the stateless cookies of RFC 6347 §4.2.1. A cookie is the secret's
// generation (its low byte) and the first 16 bytes of HMAC-SHA256, under that secret, over the
// generation, the client's address and port, and the ClientHello parameters that a client must
// repeat (clientHello.head and tail: version, random, session_id, cipher_suites,
// compression_methods). Generations count rotations since the Server started; a fresh
// random secret starts each, taken when the first cookie of the generation is made or checked.
type cookies struct {
	now     func() time.Time
	start   time.Time
	every   time.Duration
	secrets atomic.Pointer[cookieSecrets]
}

func newCookies(now func() time.Time, every time.Duration) *cookies {
	c := &cookies{now: now, start: now(), every: every}
	s := &cookieSecrets{}
	_, _ = rand.Read(s.cur[:]) // never fails (crypto/rand, Go ≥ 1.24)
	c.secrets.Store(s)
	return c
}

// current returns the secrets of the present generation. A clock that goes back keeps the
// newest generation.
func (c *cookies) current() *cookieSecrets {
	gen := int64(c.now().Sub(c.start) / c.every)
	for {
		s := c.secrets.Load()
		if gen <= s.gen {
			return s
		}
		next := &cookieSecrets{gen: gen}
		_, _ = rand.Read(next.cur[:])
		if gen == s.gen+1 {
			next.prev, next.hasPrev = s.cur, true
		}
		if c.secrets.CompareAndSwap(s, next) {
			return next
		}
	}
}

// sign returns the cookie for h from the address from, in sc's buffer.
func (c *cookies) sign(sc *helloScratch, h clientHello, from netip.AddrPort) []byte {
	s := c.current()
	sc.cookie[0] = byte(s.gen)
	copy(sc.cookie[1:], sc.mac(s.gen, &s.cur, h, from))
	return sc.cookie[:]
}

// verify reports whether h carries the cookie this server made for it from the address
// from, under the current or the previous secret.
func (c *cookies) verify(sc *helloScratch, h clientHello, from netip.AddrPort) bool {
	if len(h.cookie) != cookieLen {
		return false
	}
	s := c.current()
	gen, key := s.gen, &s.cur
	switch {
	case h.cookie[0] == byte(s.gen):
	case h.cookie[0] == byte(s.gen-1) && s.hasPrev:
		gen, key = s.gen-1, &s.prev
	default:
		return false
	}
	return hmac.Equal(sc.mac(gen, key, h, from), h.cookie[1:])
}

// helloScratch is what answering one ClientHello needs, pooled so that the stateless path
// allocates nothing: a keyed HMAC per generation parity (the current and the previous
// secret each keep theirs), the MAC input and output, and the reply.
type helloScratch struct {
	keys   [2][32]byte
	macs   [2]hash.Hash
	in     [1 + 16 + 2]byte
	sum    [sha256.Size]byte
	cookie [cookieLen]byte
	out    [helloVerifyRecordLen]byte
}

func (sc *helloScratch) mac(gen int64, key *[32]byte, h clientHello, from netip.AddrPort) []byte {
	i := gen & 1
	if sc.macs[i] == nil || sc.keys[i] != *key {
		sc.keys[i] = *key
		sc.macs[i] = hmac.New(sha256.New, sc.keys[i][:])
	} else {
		sc.macs[i].Reset()
	}
	m := sc.macs[i]
	addr := from.Addr().Unmap().As16()
	sc.in[0] = byte(gen)
	copy(sc.in[1:17], addr[:])
	binary.BigEndian.PutUint16(sc.in[17:], from.Port())
	m.Write(sc.in[:])
	m.Write(h.head)
	m.Write(h.tail)
	return m.Sum(sc.sum[:0])[:cookieMACLen]
}
