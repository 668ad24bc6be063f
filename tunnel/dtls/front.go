package dtls

import (
	"hash/maphash"
	"net/netip"

	"github.com/dstmgw/dstm/internal/limit"
)

// Answers to ClientHellos from addresses with no peer, per second and source: an IPv6 /64 (a
// host can use any address of its /64) or an IPv4 address. A legitimate client needs one
// HelloVerifyRequest per handshake, a few more if they are lost, but a source may be a whole
// LAN or a NAT whose clients all reconnect at once, after a gateway restart say.
//
// There is no tighter bucket per IPv6 address: limit.TokenBucket takes a token or refuses, so
// a bucket checked before the /64's would let one host drain every address bucket from the
// addresses of its /64, and one checked after it would protect nothing.
const (
	helloSourceRate, helloSourceBurst = 100, 200
	// helloBuckets is the number of per-source buckets. Sources share them by a keyed hash,
	// so their memory is fixed whatever the number of sources; a source that collides with a
	// flooding one is limited with it.
	helloBuckets = 1024
)

const (
	contentAlert          = 21
	alertHandshakeFailure = 40
)

// handleHello is the stateless front: a ClientHello from an address with no peer. Only one
// that carries a valid cookie, at message_seq 0, creates a peer; every other is answered
// (within the reply limits) or dropped, and counted, without any per-peer state.
func (s *Server) handleHello(b []byte, from netip.AddrPort) {
	h, ok := parseClientHello(b)
	if !ok {
		s.stats.droppedBadHello.Add(1)
		return
	}
	sc := s.scratch.Get().(*helloScratch)
	defer s.scratch.Put(sc)
	if len(h.cookie) > 0 && !s.cookies.verify(sc, h, from) {
		s.stats.droppedBadCookie.Add(1)
		h.cookie = nil
	}
	switch {
	case len(h.cookie) == 0:
		if !s.replyAllowed(from.Addr()) {
			s.stats.droppedHelloRate.Add(1)
			return
		}
		s.stats.helloVerifies.Add(1)
		_ = s.cfg.Write(appendHelloVerify(sc.out[:0], h, s.cookies.sign(sc, h, from)), from)
	case h.msgSeq != 0:
		// A client that answered with the standard second ClientHello (message_seq 1):
		// pion cannot continue that handshake here. The alert ends it at once, so the
		// client falls back to TLS without waiting for its timeout.
		s.stats.droppedOldClient.Add(1)
		if s.replyAllowed(from.Addr()) {
			_ = s.cfg.Write(appendAlert(sc.out[:0], h.recSeq, alertHandshakeFailure), from)
		}
	default:
		if p := s.admit(from); p != nil {
			p.deliverWithoutCookie(b, from, h)
		}
	}
}

// replyAllowed takes a token from the source's bucket and then from the bucket of all
// sources.
func (s *Server) replyAllowed(a netip.Addr) bool {
	return s.replies.sources[s.replies.slot(a)].Allow() && s.replies.all.Allow()
}

// replyLimits bounds the datagrams the stateless front sends. Its buckets are made once:
// nothing is allocated per source.
type replyLimits struct {
	seed    maphash.Seed
	sources [helloBuckets]*limit.TokenBucket
	all     *limit.TokenBucket
}

func newReplyLimits(cfg ServerConfig) *replyLimits {
	l := &replyLimits{
		seed: maphash.MakeSeed(),
		all:  limit.NewTokenBucket(cfg.HelloVerifyRate, max(1, int(cfg.HelloVerifyRate)), cfg.Now),
	}
	for i := range l.sources {
		l.sources[i] = limit.NewTokenBucket(helloSourceRate, helloSourceBurst, cfg.Now)
	}
	return l
}

// slot returns the bucket of a's source: its /64, or the IPv4 address.
func (l *replyLimits) slot(a netip.Addr) int {
	a = a.Unmap()
	if a.Is4() {
		v4 := a.As4()
		return int(maphash.Bytes(l.seed, v4[:]) % helloBuckets)
	}
	v6 := a.As16()
	return int(maphash.Bytes(l.seed, v6[:8]) % helloBuckets)
}

// appendAlert appends a fatal plaintext alert record in epoch 0 with record sequence number
// seq.
func appendAlert(dst []byte, seq uint64, desc byte) []byte {
	dst = append(dst, contentAlert, 0xfe, 0xfd, 0, 0)
	dst = append48(dst, seq)
	return append(dst, 0, 2, 2, desc) // length 2, level fatal
}
