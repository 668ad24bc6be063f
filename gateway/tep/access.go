package tep

import (
	"cmp"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/internal/packet"
)

// sessionRules is what a ruled session enforces: swapped whole (one atomic
// store) when the rules change, so the hot path takes no lock for them. The
// connection table outlives swaps: flows opened under older rules are
// checked against the new ones when their next reply arrives.
type sessionRules struct {
	set    *acl.Set
	gen    uint32
	ct     *acl.Table
	denied *[2]atomic.Uint64 // the access block's counters, per acl.Dir
}

// SetAccess replaces the access-rule lookup (nil: no access control) and
// applies it to every session at once; their next packet is judged by the
// new rules. Sessions keep their tracked flows.
func (t *TEP) SetAccess(access func(identity string, groups []string) *acl.Set) {
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	t.access = access
	t.gen++
	for _, s := range t.reg.allLocked() {
		t.applyAccessLocked(s)
	}
}

// applyAccessLocked gives s the current rules of its identity.
func (t *TEP) applyAccessLocked(s *Session) {
	var set *acl.Set
	if t.access != nil {
		set = t.access(s.info.Identity, s.info.Groups)
	}
	if set == nil {
		s.rules.Store(nil)
		return
	}
	r := &sessionRules{set: set, gen: t.gen, denied: t.denied[set.Name()]}
	if r.denied == nil {
		r.denied = new([2]atomic.Uint64)
		t.denied[set.Name()] = r.denied
	}
	if old := s.rules.Load(); old != nil {
		r.ct = old.ct
	} else {
		r.ct = acl.NewTable(t.cfg.Conntrack, &t.evicted)
	}
	s.rules.Store(r)
}

// allowed judges pkt (valid and trimmed) in direction d; a denied packet is
// counted, sampled into the log and, if the rules say so, answered. sc is
// the inside reader's scratch (inbound only).
func (s *Session) allowed(r *sessionRules, d acl.Dir, pkt []byte, now int64, sc *insideScratch) bool {
	var f acl.Flow
	if acl.Classify(pkt, &f) {
		if s.tep.keepalive(d, &f) {
			return true
		}
		if v, _ := r.set.Decide(d, &f, r.ct, r.gen, now); v != acl.Deny {
			return true
		}
	}
	t := s.tep
	r.denied[d].Add(1)
	if d == acl.Outbound {
		t.drop(DropDeniedOutbound, 1)
	} else {
		t.drop(DropDeniedInbound, 1)
	}
	t.deny.sample(s, r, d, &f, now)
	if r.set.Reject() {
		s.reject(d, pkt, sc)
	}
	return false
}

// keepalive reports whether f is a client's keepalive (an ICMP echo request to the gateway's
// inner address, the address the offer names) or its reply: part of the tunnel, not of the
// traffic the rules are about. Without it, rules that allow no ICMP would make the client
// see a dead tunnel whenever nothing else comes back for three keepalive intervals.
func (t *TEP) keepalive(d acl.Dir, f *acl.Flow) bool {
	if f.Proto != packet.ProtoICMP {
		return false
	}
	if d == acl.Outbound {
		return f.Dst == t.inner && f.ICMPType == packet.ICMPTypeEcho
	}
	return f.Src == t.inner && f.ICMPType == packet.ICMPTypeEchoReply
}

// reject answers a denied packet where it came from: a TCP RST for TCP,
// ICMP administratively prohibited otherwise, within the ICMP rate limit.
func (s *Session) reject(d acl.Dir, pkt []byte, sc *insideScratch) {
	t := s.tep
	if d == acl.Inbound {
		// From the client's address: the kernel drops packets arriving
		// with one of its own addresses as source.
		out, err := rejectFor(sc.icmp[0][:tunOffset], pkt, packet.Dst(pkt))
		if err == nil && t.icmp.Allow() {
			t.writeInside(sc, out)
		}
		return
	}
	ob := t.getOut()
	out, err := rejectFor(ob.b[:0], pkt, t.cfg.InnerAddr)
	s.enqueueGenerated(ob, out, err)
}

func rejectFor(b, pkt []byte, icmpSrc netip.Addr) ([]byte, error) {
	if packet.Proto(pkt) == packet.ProtoTCP {
		return packet.AppendTCPReset(b, pkt)
	}
	return packet.AppendAdminProhibited(b, pkt, icmpSrc)
}

// denyLogEvery is the most often the TEP logs a denied packet: a flood of
// denied packets costs counters, not log lines.
const denyLogEvery = time.Second

// denyLog samples denied packets into the log, one line per denyLogEvery
// at most across all sessions, each with the count since the previous one.
type denyLog struct {
	next atomic.Int64  // unix nanoseconds before which nothing is logged
	n    atomic.Uint64 // denied since the last line
}

func (l *denyLog) sample(s *Session, r *sessionRules, d acl.Dir, f *acl.Flow, now int64) {
	l.n.Add(1)
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(denyLogEvery)) {
		return
	}
	s.tep.log.Info().Str("session", s.info.ID).Str("identity", s.info.Identity).
		Str("direction", d.String()).Str("rule", r.set.Name()).Uint8("proto", f.Proto).
		Stringer("src", netip.AddrFrom4(f.Src)).Stringer("dst", netip.AddrFrom4(f.Dst)).
		Uint16("dst_port", f.DstPort).Uint64("denied", l.n.Swap(0)).
		Msg("packets denied by access rules")
}

// deniedCounts returns the per-access-block counters, sorted.
func (t *TEP) deniedCounts() []Denied {
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	out := make([]Denied, 0, 2*len(t.denied))
	for name, c := range t.denied {
		for d := range c {
			out = append(out, Denied{Rule: name, Direction: acl.Dir(d).String(), Packets: c[d].Load()})
		}
	}
	slices.SortFunc(out, func(a, b Denied) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Direction, b.Direction))
	})
	return out
}
