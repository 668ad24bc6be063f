//go:build linux

package plain

import (
	"net/netip"
	"testing"
)

// TestPeerTable: links are found by their endpoint across shards, replaced and removed.
func TestPeerTable(t *testing.T) {
	var pt peerTable
	pt.init()
	base := netip.MustParseAddr("2001:db8::").As16()
	links := map[netip.Addr]*link{}
	for i := range 2000 {
		a := base
		a[14], a[15] = byte(i>>8), byte(i)
		addr := netip.AddrFrom16(a)
		links[addr] = &link{endpoint: addr}
		pt.setLocked(addr, links[addr])
	}
	used := map[int]bool{}
	for a, l := range links {
		if pt.get(a) != l {
			t.Fatalf("%v: wrong link", a)
		}
		used[shardOf(a)] = true
	}
	if len(used) < peerShards/2 {
		t.Fatalf("2000 endpoints in %d of %d shards", len(used), peerShards)
	}
	for a := range links {
		pt.setLocked(a, nil)
		if pt.get(a) != nil {
			t.Fatalf("%v still has a link", a)
		}
	}
	for i := range pt.shards {
		if n := len(*pt.shards[i].Load()); n != 0 {
			t.Fatalf("shard %d keeps %d entries", i, n)
		}
	}
}
