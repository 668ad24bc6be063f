package lease

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// memStore is a Store kept in memory, for tests and for gateways that need
// no persistence. It honours the whole Store contract except durability.
type memStore struct {
	mu     sync.Mutex
	leases map[uint32]*Record // keyed by u32(addr): IPv4 only
	index  map[string][]netip.Addr
}

// NewMemStore returns an empty in-memory Store.
func NewMemStore() Store {
	return &memStore{leases: make(map[uint32]*Record), index: make(map[string][]netip.Addr)}
}

func (s *memStore) Load(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := Snapshot{Leases: make([]Record, 0, len(s.leases)), Index: make(map[string][]netip.Addr, len(s.index))}
	for _, r := range s.leases {
		snap.Leases = append(snap.Leases, *r)
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
		cur := s.leases[u32(c.Addr)]
		if cur != nil {
			have = cur.Version
		}
		if have != c.Prev {
			e := &ConflictError{Addr: c.Addr, Expected: c.Prev}
			if cur != nil {
				r := *cur
				e.Current = &r
			}
			return e
		}
	}
	for _, c := range txn.Leases {
		if c.Lease == nil {
			delete(s.leases, u32(c.Addr))
			continue
		}
		if r := s.leases[u32(c.Addr)]; r != nil {
			*r = Record{Lease: *c.Lease, Version: c.Prev + 1}
			continue
		}
		s.leases[u32(c.Addr)] = &Record{Lease: *c.Lease, Version: c.Prev + 1}
	}
	for _, c := range txn.Index {
		if len(c.Addrs) == 0 {
			delete(s.index, c.Identity)
			continue
		}
		s.index[c.Identity] = slices.Clone(c.Addrs)
	}
	return nil
}
