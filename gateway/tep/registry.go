package tep

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// registryShards is the number of copy-on-write shards (a power of two).
// Leases are handed out consecutively, so the low bits spread them evenly.
const registryShards = 4096

// registry maps a leased IPv4 address to its session. A lookup is one atomic
// load and one map read: each shard is an immutable map replaced as a whole
// under mu. Writes happen once per session, lookups once per packet; the
// shards keep each copy small.
type registry struct {
	mu     sync.Mutex
	n      int
	shards [registryShards]atomic.Pointer[map[uint32]*Session]
}

func key(a netip.Addr) (uint32, int) {
	b := a.As4()
	k := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	return k, int(k % registryShards)
}

func (r *registry) lookup(a netip.Addr) *Session {
	k, sh := key(a)
	m := r.shards[sh].Load()
	if m == nil {
		return nil
	}
	return (*m)[k]
}

func (r *registry) lookupKey(b [4]byte) *Session {
	k := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	m := r.shards[k%registryShards].Load()
	if m == nil {
		return nil
	}
	return (*m)[k]
}

func (r *registry) addLocked(s *Session) bool {
	k, sh := key(s.info.Lease)
	old := r.shards[sh].Load()
	next := make(map[uint32]*Session, mapLen(old)+1)
	if old != nil {
		if _, ok := (*old)[k]; ok {
			return false
		}
		for kk, v := range *old {
			next[kk] = v
		}
	}
	next[k] = s
	r.shards[sh].Store(&next)
	r.n++
	return true
}

// removeLocked removes s if it is still the session of its lease.
func (r *registry) removeLocked(s *Session) bool {
	k, sh := key(s.info.Lease)
	old := r.shards[sh].Load()
	if old == nil || (*old)[k] != s {
		return false
	}
	next := make(map[uint32]*Session, len(*old))
	for kk, v := range *old {
		if kk != k {
			next[kk] = v
		}
	}
	r.shards[sh].Store(&next)
	r.n--
	return true
}

func (r *registry) allLocked() []*Session {
	out := make([]*Session, 0, r.n)
	for i := range r.shards {
		if m := r.shards[i].Load(); m != nil {
			for _, s := range *m {
				out = append(out, s)
			}
		}
	}
	return out
}

func mapLen(m *map[uint32]*Session) int {
	if m == nil {
		return 0
	}
	return len(*m)
}
