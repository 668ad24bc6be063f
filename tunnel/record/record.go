// Package record is the dstm data record format (version 1): inner IPv4 packets sealed with
// keys exported from a DTLS session, carried in UDP datagrams beside the DTLS records on the
// same port and told apart by their first byte (docs/protocol.md, "Data records").
//
//	0      1          5                 13
//	+------+----------+-----------------+---------------------------+
//	| 0x08 | session  | counter (64-bit | AEAD(packet), 16-byte tag |
//	|      | id (32)  | big endian)     |                           |
//	+------+----------+-----------------+---------------------------+
//
// The 13-byte header is the additional data; the nonce is the header after its type byte,
// session id and counter (unique per key: a key belongs to one direction of one session).
// Each direction has its own secret, exported from the DTLS session (RFC 5705, label
// ExporterLabel); the key for a packet is derived from its direction's secret and its epoch,
// the counter divided by EpochPackets, so keys change every EpochPackets packets with no
// message. Receivers drop what does not authenticate and what the RFC 6479 window has seen or
// left behind (epochs before the one before the newest included).
//
// No I/O here: Sealer and Opener work on caller buffers and never allocate after their first
// packet of an epoch.
package record

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/replay"
)

const (
	// Type is the first byte of every data record; RFC 7983 leaves 4–15 unassigned, and the
	// gateway's UDP port uses 20–25 for DTLS and 0xF0–0xFF for TSP.
	Type = 0x08
	// HeaderLen is type, session id and counter.
	HeaderLen = 1 + 4 + 8
	// TagLen is the AEAD tag of every suite.
	TagLen = 16
	// Overhead is what a data record adds to a packet.
	Overhead = HeaderLen + TagLen

	// ExporterLabel is the RFC 5705 label of the secrets; ExporterLen bytes are exported, the
	// client-to-server secret first.
	ExporterLabel = "EXPORTER-dstm-data-v1"
	ExporterLen   = 2 * secretLen
	secretLen     = 32

	// EpochPackets is the number of packets sealed under one key: 2^24, below the 2^24.5
	// full-size records RFC 8446 §5.5 allows one AES-GCM key.
	EpochPackets = 1 << 24
	epochShift   = 24

	// maxCounter bounds a direction's counter; a Sealer refuses to go past it.
	maxCounter = 1<<64 - 1 - EpochPackets
)

// Suite is the AEAD of a session's data records.
type Suite byte

const (
	AES256GCM        Suite = 1
	ChaCha20Poly1305 Suite = 2
)

func (s Suite) String() string {
	switch s {
	case AES256GCM:
		return "AES-256-GCM"
	case ChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	}
	return fmt.Sprintf("suite(%d)", byte(s))
}

// Valid reports whether s is a known suite.
func (s Suite) Valid() bool { return s == AES256GCM || s == ChaCha20Poly1305 }

// Errors of Open, one per drop reason.
var (
	ErrShort     = errors.New("record: shorter than a header and a tag")
	ErrNotRecord = errors.New("record: not a data record")
	ErrSession   = errors.New("record: another session")
	ErrAuth      = errors.New("record: does not authenticate")
	ErrReplay    = errors.New("record: replayed or behind the window")
	ErrOrder     = errors.New("record: not the next record of the stream")
	ErrEpoch     = errors.New("record: epoch out of range")
	ErrExhausted = errors.New("record: counter exhausted")
)

// Secrets are a session's two directions' secrets, as exported.
type Secrets struct {
	ClientToServer, ServerToClient [secretLen]byte
}

// SplitSecrets splits ExporterLen exported bytes.
func SplitSecrets(exported []byte) (Secrets, error) {
	var s Secrets
	if len(exported) != ExporterLen {
		return s, fmt.Errorf("record: %d exported bytes, want %d", len(exported), ExporterLen)
	}
	copy(s.ClientToServer[:], exported[:secretLen])
	copy(s.ServerToClient[:], exported[secretLen:])
	return s, nil
}

// Directions returns the secrets this side seals with (send) and opens with (recv): the
// server's send is the client's recv.
func (s Secrets) Directions(server bool) (send, recv [secretLen]byte) {
	if server {
		return s.ServerToClient, s.ClientToServer
	}
	return s.ClientToServer, s.ServerToClient
}

// epochKey derives the key of one epoch of one direction.
func epochKey(suite Suite, secret *[secretLen]byte, epoch uint64) []byte {
	var info [len("dstm data v1 epoch") + 1 + 8]byte
	n := copy(info[:], "dstm data v1 epoch")
	info[n] = byte(suite)
	binary.BigEndian.PutUint64(info[n+1:], epoch)
	k, err := hkdf.Expand(sha256.New, secret[:], string(info[:]), 32)
	if err != nil { // only for lengths HKDF cannot produce
		panic(err)
	}
	return k
}

func newAEAD(suite Suite, key []byte) (cipher.AEAD, error) {
	switch suite {
	case AES256GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	case ChaCha20Poly1305:
		return chacha20poly1305.New(key)
	}
	return nil, fmt.Errorf("record: unknown suite %d", byte(suite))
}

type epochAEAD struct {
	epoch uint64
	aead  cipher.AEAD
}

// Sealer seals one direction's packets. It is safe for concurrent use.
type Sealer struct {
	suite   Suite
	secret  [secretLen]byte
	session uint32
	counter atomic.Uint64 // the next packet's
	cur     atomic.Pointer[epochAEAD]
	mu      sync.Mutex // serializes key changes
}

// NewSealer returns the Sealer of the direction whose secret is secret, for the session id
// the receiver gave.
func NewSealer(suite Suite, secret [secretLen]byte, session uint32) (*Sealer, error) {
	a, err := newAEAD(suite, epochKey(suite, &secret, 0))
	if err != nil {
		return nil, err
	}
	s := &Sealer{suite: suite, secret: secret, session: session}
	s.cur.Store(&epochAEAD{aead: a})
	return s, nil
}

// Seal appends the data record of pkt to dst and returns it.
func (s *Sealer) Seal(dst, pkt []byte) ([]byte, error) {
	c := s.counter.Add(1) - 1
	if c >= maxCounter {
		s.counter.Store(maxCounter) // stays exhausted: never wraps to a used nonce
		return dst, ErrExhausted
	}
	ea, err := s.epoch(c >> epochShift)
	if err != nil {
		return dst, err
	}
	off := len(dst)
	dst = append(dst, Type, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	h := dst[off : off+HeaderLen]
	binary.BigEndian.PutUint32(h[1:5], s.session)
	binary.BigEndian.PutUint64(h[5:13], c)
	return ea.aead.Seal(dst, h[1:], pkt, h), nil
}

func (s *Sealer) epoch(e uint64) (*epochAEAD, error) {
	if ea := s.cur.Load(); ea.epoch == e {
		return ea, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ea := s.cur.Load()
	if ea.epoch == e {
		return ea, nil
	}
	a, err := newAEAD(s.suite, epochKey(s.suite, &s.secret, e))
	if err != nil {
		return nil, err
	}
	next := &epochAEAD{epoch: e, aead: a}
	if e > ea.epoch { // a packet of the epoch before that is still sealing keeps its own key
		s.cur.Store(next)
	}
	return next, nil
}

// Session returns the session id a data record begins with (after its type), or false when
// b is too short to be a data record.
func Session(b []byte) (uint32, bool) {
	if len(b) < Overhead || b[0] != Type {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[1:5]), true
}

// Opener opens one direction's packets. It is safe for concurrent use.
type Opener struct {
	suite   Suite
	secret  [secretLen]byte
	session uint32

	mu     sync.Mutex
	filter *replay.Filter // nil for a stream: next instead
	next   uint64         // a stream's next counter
	newest uint64         // epoch of the newest packet accepted
	keys   [3]epochAEAD   // epochs newest-1, newest, and one ahead (newest+1 or further); aead nil until derived
}

// NewOpener returns the Opener of the direction whose secret is secret, for the session id
// this side gave.
func NewOpener(suite Suite, secret [secretLen]byte, session uint32) (*Opener, error) {
	a, err := newAEAD(suite, epochKey(suite, &secret, 0))
	if err != nil {
		return nil, err
	}
	o := &Opener{suite: suite, secret: secret, session: session, filter: new(replay.Filter)}
	o.keys[1] = epochAEAD{epoch: 0, aead: a}
	return o, nil
}

// NewStreamOpener is NewOpener for records that come in the order they were sealed (on a
// byte stream): each must carry the counter after the last one opened, or it is ErrOrder.
// It keeps no replay window.
func NewStreamOpener(suite Suite, secret [secretLen]byte, session uint32) (*Opener, error) {
	o, err := NewOpener(suite, secret, session)
	if err != nil {
		return nil, err
	}
	o.filter = nil
	return o, nil
}

// Open authenticates and decrypts the data record b in place and returns the packet (within
// b) and its counter. A record that fails leaves the Opener as it was.
func (o *Opener) Open(b []byte) (pkt []byte, counter uint64, err error) {
	if len(b) < Overhead {
		return nil, 0, ErrShort
	}
	if b[0] != Type {
		return nil, 0, ErrNotRecord
	}
	if binary.BigEndian.Uint32(b[1:5]) != o.session {
		return nil, 0, ErrSession
	}
	c := binary.BigEndian.Uint64(b[5:13])
	if c >= maxCounter {
		return nil, 0, ErrReplay
	}
	a, err := o.aead(c >> epochShift)
	if err != nil {
		return nil, 0, err
	}
	pkt, err = a.Open(b[HeaderLen:HeaderLen], b[1:HeaderLen], b[HeaderLen:], b[:HeaderLen])
	if err != nil {
		return nil, 0, ErrAuth
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.filter == nil && c != o.next:
		return nil, 0, ErrOrder
	case o.filter == nil:
		o.next++
	case !o.filter.ValidateCounter(c, maxCounter):
		return nil, 0, ErrReplay
	}
	if e := c >> epochShift; e > o.newest {
		o.advance(e)
	}
	return pkt, c, nil
}

// aead returns the key of epoch e, deriving it on first use: the epoch before the newest, the
// newest, or one ahead, however far (packets lost in a row: a sender's counter runs on while
// its peer is unreachable). Older epochs are left behind with the replay window.
func (o *Opener) aead(e uint64) (cipher.AEAD, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e+1 < o.newest {
		return nil, ErrEpoch
	}
	i := int(min(e+1-o.newest, 2)) // 0, 1 or 2
	if k := &o.keys[i]; k.aead == nil || k.epoch != e {
		a, err := newAEAD(o.suite, epochKey(o.suite, &o.secret, e))
		if err != nil {
			return nil, err
		}
		*k = epochAEAD{epoch: e, aead: a}
	}
	return o.keys[i].aead, nil
}

// advance makes e, whose key is in keys[2], the newest epoch.
func (o *Opener) advance(e uint64) {
	if e == o.newest+1 {
		o.keys[0], o.keys[1], o.keys[2] = o.keys[1], o.keys[2], epochAEAD{}
	} else { // a jump: the epoch before e is derived if a packet of it comes
		o.keys[0], o.keys[1], o.keys[2] = epochAEAD{}, o.keys[2], epochAEAD{}
	}
	o.newest = e
}
