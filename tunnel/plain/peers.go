//go:build linux

package plain

import (
	"net/netip"
	"sync/atomic"
)

// peerShards splits the peer table so that a registration copies one shard, not every peer.
const peerShards = 256

// peerTable maps an outer IPv6 source to its link. Reads (one per received packet) take no
// lock: each shard is a map replaced whole on change (copy on write), under Server.mu.
type peerTable struct {
	shards [peerShards]atomic.Pointer[map[netip.Addr]*link]
}

func (t *peerTable) init() {
	for i := range t.shards {
		t.shards[i].Store(&map[netip.Addr]*link{})
	}
}

func shardOf(a netip.Addr) int {
	b := a.As16()
	h := uint32(2166136261)
	for _, c := range b[8:] { // the interface identifier varies most
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % peerShards)
}

func (t *peerTable) get(a netip.Addr) *link { return (*t.shards[shardOf(a)].Load())[a] }

// setLocked makes l the link of a (nil: none); Server.mu is held.
func (t *peerTable) setLocked(a netip.Addr, l *link) {
	sh := &t.shards[shardOf(a)]
	old := *sh.Load()
	next := make(map[netip.Addr]*link, len(old)+1)
	for k, v := range old {
		if k != a {
			next[k] = v
		}
	}
	if l != nil {
		next[a] = l
	}
	sh.Store(&next)
}
