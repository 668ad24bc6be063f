package acl

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of TrackConfig fields left zero (nebula's are 12 min for TCP,
// 3 min for UDP and 10 min for the rest).
const (
	DefaultMaxFlows   = 4096
	DefaultTCP        = 15 * time.Minute
	DefaultTCPClosing = 10 * time.Second
	DefaultUDP        = 3 * time.Minute
	DefaultICMP       = 30 * time.Second
)

// TrackConfig bounds a connection table and sets its timeouts. Each
// allowed packet restarts its flow's timeout.
type TrackConfig struct {
	MaxFlows   int           // flows per table (per session)
	TCP        time.Duration // an open TCP flow
	TCPClosing time.Duration // a TCP flow after a FIN or RST
	UDP        time.Duration
	ICMP       time.Duration // ICMP echo
}

func (c TrackConfig) withDefaults() TrackConfig {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	set(&c.TCP, DefaultTCP)
	set(&c.TCPClosing, DefaultTCPClosing)
	set(&c.UDP, DefaultUDP)
	set(&c.ICMP, DefaultICMP)
	return c
}

// ways is the associativity of the table: a flow lives in one of the 4
// slots of its bucket.
const ways = 4

const minBuckets = 4

// Table tracks one session's flows so that replies pass without rules. It
// is a set-associative hash table that starts small and doubles, up to
// MaxFlows, when a bucket has no free or expired slot; at its full size the
// flow in that bucket that expires first is evicted (and counted). Its
// memory is allocated on first use. Safe for concurrent use.
type Table struct {
	mu      sync.Mutex
	cfg     TrackConfig
	maxB    int
	buckets []bucket
	evicted *atomic.Uint64
}

type bucket [ways]entry

// entry is one flow, from the client's side: remote address and port, the
// client's port, the protocol, who opened it and under which rules.
type entry struct {
	key     uint64 // remote<<32 | local port<<16 | remote port
	expires int64  // unix nanoseconds; 0: free
	gen     uint32 // rules generation that allowed the opening packet
	proto   uint8
	init    Dir
}

// NewTable returns an empty table; evictions are added to evicted.
func NewTable(cfg TrackConfig, evicted *atomic.Uint64) *Table {
	cfg = cfg.withDefaults()
	maxB := 1 << bits.Len(uint((cfg.MaxFlows+ways-1)/ways-1))
	return &Table{cfg: cfg, maxB: max(maxB, minBuckets), evicted: evicted}
}

// flowKey returns the flow's key seen from the client for a packet in
// direction d.
func flowKey(d Dir, f *Flow) uint64 {
	remote, lport, rport := f.Dst, f.SrcPort, f.DstPort
	if d == Inbound {
		remote, lport, rport = f.Src, f.DstPort, f.SrcPort
	}
	return uint64(remote[0])<<56 | uint64(remote[1])<<48 | uint64(remote[2])<<40 | uint64(remote[3])<<32 |
		uint64(lport)<<16 | uint64(rport)
}

func (t *Table) index(key uint64, proto uint8) int {
	h := (key ^ uint64(proto)<<40) * 0x9e3779b97f4a7c15
	return int(h>>32) & (len(t.buckets) - 1)
}

func (t *Table) timeout(f *Flow) int64 {
	switch f.Proto {
	case ipTCP:
		if f.TCPFlags&(tcpFIN|tcpRST) != 0 {
			return int64(t.cfg.TCPClosing)
		}
		return int64(t.cfg.TCP)
	case ipUDP:
		return int64(t.cfg.UDP)
	}
	return int64(t.cfg.ICMP)
}

// trackable reports whether f belongs to a flow the table can follow.
func trackable(f *Flow) bool {
	switch f.Proto {
	case ipTCP, ipUDP:
		return true
	case ipICMP:
		return f.ICMPType == icmpEcho || f.ICMPType == icmpEchoReply
	}
	return false
}

// find returns the live entry of key, or nil. Callers hold mu.
func (t *Table) find(key uint64, proto uint8, now int64) *entry {
	if t.buckets == nil {
		return nil
	}
	b := &t.buckets[t.index(key, proto)]
	for i := range b {
		if e := &b[i]; e.expires > now && e.key == key && e.proto == proto {
			return e
		}
	}
	return nil
}

// track records or refreshes the flow of f, allowed in direction d by the
// rules of generation gen. The flow keeps the direction that opened it.
func (t *Table) track(d Dir, f *Flow, gen uint32, now int64) {
	key := flowKey(d, f)
	exp := now + t.timeout(f)
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.find(key, f.Proto, now); e != nil {
		e.expires, e.gen = exp, gen
		return
	}
	if t.buckets == nil {
		t.buckets = make([]bucket, minBuckets)
	}
	e := t.slot(key, f.Proto, now)
	*e = entry{key: key, expires: exp, gen: gen, proto: f.Proto, init: d}
}

// slot returns a free or expired slot for key, growing the table or, at
// its full size, evicting the flow of the bucket that expires first.
func (t *Table) slot(key uint64, proto uint8, now int64) *entry {
	for {
		b := &t.buckets[t.index(key, proto)]
		oldest := &b[0]
		for i := range b {
			if b[i].expires <= now {
				return &b[i]
			}
			if b[i].expires < oldest.expires {
				oldest = &b[i]
			}
		}
		if len(t.buckets) >= t.maxB {
			if t.evicted != nil {
				t.evicted.Add(1)
			}
			return oldest
		}
		t.grow(now)
	}
}

// grow doubles the table, leaving expired flows behind. A bucket of the new
// table can overflow only if more than ways flows of one old bucket move to
// it, which the doubling rules out (each old bucket splits into two).
func (t *Table) grow(now int64) {
	old := t.buckets
	t.buckets = make([]bucket, 2*len(old))
	for bi := range old {
		for _, e := range old[bi] {
			if e.expires <= now {
				continue
			}
			nb := &t.buckets[t.index(e.key, e.proto)]
			for i := range nb {
				if nb[i].expires == 0 {
					nb[i] = e
					break
				}
			}
		}
	}
}

// reply reports whether f, in direction d, answers a flow opened in the
// other direction that the rules of generation gen still allow (a flow of
// an older generation is checked against s again, once). A tracked reply
// refreshes its flow.
func (t *Table) reply(s *Set, d Dir, f *Flow, gen uint32, now int64) bool {
	if f.Proto == ipICMP && f.ICMPType != icmpEchoReply {
		return false
	}
	key := flowKey(d, f)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.find(key, f.Proto, now)
	if e == nil || e.init == d {
		return false
	}
	if e.gen != gen {
		if s.Match(e.init, opening(e)) == NoRule {
			e.expires = 0
			return false
		}
		e.gen = gen
	}
	e.expires = now + t.timeout(f)
	return true
}

// opening rebuilds the packet that opened e, as far as the rules look.
func opening(e *entry) *Flow {
	f := &Flow{Proto: e.proto}
	remote := [4]byte{byte(e.key >> 56), byte(e.key >> 48), byte(e.key >> 40), byte(e.key >> 32)}
	lport, rport := uint16(e.key>>16), uint16(e.key)
	if e.init == Outbound {
		f.Dst, f.SrcPort, f.DstPort = remote, lport, rport
	} else {
		f.Src, f.SrcPort, f.DstPort = remote, rport, lport
	}
	if e.proto == ipICMP {
		f.ICMPType = icmpEcho
	}
	return f
}

// related reports whether the ICMP error f, in direction d, is about a
// tracked flow (path MTU discovery and unreachables for allowed flows).
func (t *Table) related(d Dir, f *Flow, now int64) bool {
	q := Flow{Proto: f.Q.Proto, Src: f.Q.Src, Dst: f.Q.Dst, SrcPort: f.Q.SrcPort, DstPort: f.Q.DstPort}
	// The quoted packet went the other way: an error to the client quotes
	// what the client sent.
	od := Outbound
	if d == Outbound {
		od = Inbound
	}
	key := flowKey(od, &q)
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.find(key, q.Proto, now) != nil
}

// Len returns the number of live flows (for tests and status).
func (t *Table) Len(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ns := 0, now.UnixNano()
	for bi := range t.buckets {
		for _, e := range t.buckets[bi] {
			if e.expires > ns {
				n++
			}
		}
	}
	return n
}
