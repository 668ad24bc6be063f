package dtls

import (
	"net/netip"

	"github.com/dstmgw/dstm/internal/limit"
)

// Answers to ClientHellos from addresses with no peer, per second and source (limit.SourceRate:
// an IPv6 /64 or an IPv4 address). A legitimate client needs one HelloVerifyRequest per
// handshake, a few more if they are lost, but a source may be a whole LAN or a NAT whose
// clients all reconnect at once, after a gateway restart say.
const (
	helloSourceRate, helloSourceBurst = 100, 200
	helloBuckets                      = 1024 // shared by the sources (limit.SourceRate)
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
	return s.replies.sources.Allow(a) && s.replies.all.Allow()
}

// replyLimits bounds the datagrams the stateless front sends. Its buckets are made once:
// nothing is allocated per source.
type replyLimits struct {
	sources *limit.SourceRate
	all     *limit.TokenBucket
}

func newReplyLimits(cfg ServerConfig) *replyLimits {
	return &replyLimits{
		sources: limit.NewSourceRate(helloSourceRate, helloSourceBurst, helloBuckets, cfg.Now),
		all:     limit.NewTokenBucket(cfg.HelloVerifyRate, max(1, int(cfg.HelloVerifyRate)), cfg.Now),
	}
}

// appendAlert appends a fatal plaintext alert record in epoch 0 with record sequence number
// seq.
func appendAlert(dst []byte, seq uint64, desc byte) []byte {
	dst = append(dst, contentAlert, 0xfe, 0xfd, 0, 0)
	dst = append48(dst, seq)
	return append(dst, 0, 2, 2, desc) // length 2, level fatal
}
