package lease

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// memStore is a Store in memory, without durability. Records live in
// fixed-size chunks behind a pointer-free map, so the GC scans few objects.
type memStore struct {
	mu     sync.Mutex
	chunks []*[memChunk]Record // a deleted record's slot is zeroed and listed in free
	used   uint32              // slots handed out so far (free ones included)
	free   []uint32            // unused slots
	byAddr map[uint32]uint32   // u32(addr) -> slot (IPv4 only)
	index  map[string][]netip.Addr
}

const memChunk = 1024

func (s *memStore) rec(i uint32) *Record { return &s.chunks[i/memChunk][i%memChunk] }

// NewMemStore returns an empty in-memory Store.
func NewMemStore() Store {
	return &memStore{byAddr: make(map[uint32]uint32), index: make(map[string][]netip.Addr)}
}

func (s *memStore) Load(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Leases: make([]Record, 0, len(s.byAddr)), Index: make(map[string][]netip.Addr, len(s.index))}
	for _, i := range s.byAddr {
		snap.Leases = append(snap.Leases, *s.rec(i))
	}
	for id, addrs := range s.index {
		snap.Index[id] = slices.Clone(addrs)
	}
	return snap, nil
}

func (s *memStore) Commit(ctx context.Context, txn Txn) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range txn.Leases {
		if !c.Addr.Is4() {
			return fmt.Errorf("lease: memory store: %v is not an IPv4 address", c.Addr)
		}
		var have uint64
		i, ok := s.byAddr[u32(c.Addr)]
		if ok {
			have = s.rec(i).Version
		}
		if have != c.Prev {
			e := &ConflictError{Addr: c.Addr, Expected: c.Prev}
			if ok {
				r := *s.rec(i)
				e.Current = &r
			}
			return e
		}
	}
	for _, c := range txn.Leases {
		k := u32(c.Addr)
		i, ok := s.byAddr[k]
		switch {
		case c.Lease == nil && ok:
			*s.rec(i) = Record{}
			s.free = append(s.free, i)
			delete(s.byAddr, k)
		case c.Lease == nil:
		case ok:
			*s.rec(i) = Record{Lease: *c.Lease, Version: c.Prev + 1}
		default:
			s.byAddr[k] = s.slotLocked(Record{Lease: *c.Lease, Version: c.Prev + 1})
		}
	}
	for _, c := range txn.Index {
		if len(c.Addrs) == 0 {
			delete(s.index, c.Identity)
			continue
		}
		s.index[c.Identity] = c.Addrs // kept, not copied: see IndexChange
	}
	return nil
}

func (s *memStore) slotLocked(r Record) uint32 {
	var i uint32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		if s.used%memChunk == 0 {
			s.chunks = append(s.chunks, new([memChunk]Record))
		}
		i = s.used
		s.used++
	}
	*s.rec(i) = r
	return i
}
