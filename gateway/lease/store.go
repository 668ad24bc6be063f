package lease

import (
	"context"
	"fmt"
	"net/netip"
)

// Store is the authority on leases; the Manager's memory is a cache of it.
//
// Contract (what every implementation guarantees, and what an etcd store
// will guarantee across several gateways):
//
//   - One key per address holds the record of a non-free lease (offered,
//     active or held). A free address has no record.
//   - Every address key has a version: 0 when absent, incremented by one by
//     every put, back to 0 (absent) on delete. This is etcd's key Version.
//   - Commit applies a Txn atomically: either every change is applied or
//     none. Each lease change carries the version the caller last saw
//     (Prev); if any key's current version differs, nothing is applied and
//     Commit returns a *ConflictError (errors.Is(err, ErrConflict)) that
//     carries the current record of that key. Claiming a free address is
//     therefore one compare-and-swap on "key does not exist".
//   - The identity index maps an identity to the addresses it used, most
//     recent first. It is a hint for stickiness, written without compare
//     (last writer wins); the address keys alone decide who owns what.
//   - A Commit that returned nil is durable: it survives a crash of the
//     process (kill -9) once Commit has returned.
//   - Commit may be called from many goroutines at once; implementations
//     are expected to coalesce concurrent commits (boltstore: group commit).
//   - Commit must not keep txn, its Leases slice or its Lease pointers
//     after it returns (the Manager reuses them); IndexChange.Addrs lists
//     may be kept (see IndexChange).
type Store interface {
	// Load returns every lease record and the identity index.
	Load(ctx context.Context) (Snapshot, error)
	// Commit applies txn atomically, see the contract above.
	Commit(ctx context.Context, txn Txn) error
}

// exclusiveStore is implemented by a Store that can tell the Manager it is
// the store's only writer (boltstore: an embedded file it holds locked).
// The Manager then keeps offers and sessions' releases in memory only (see
// Manager.Offer and Manager.Release); a store shared by several gateways
// must not claim it.
type exclusiveStore interface {
	Exclusive() bool
}

// Record is a persisted lease with the version of its address key.
type Record struct {
	Lease   Lease
	Version uint64
}

// Snapshot is the whole content of a Store.
type Snapshot struct {
	Leases []Record
	Index  map[string][]netip.Addr
}

// Change replaces the record of one address key.
type Change struct {
	Addr netip.Addr
	// Prev is the version the caller expects the key to have (0: absent).
	Prev uint64
	// Lease is the new record; nil deletes the key.
	Lease *Lease
}

// IndexChange replaces the identity index entry of one identity; an empty
// Addrs deletes it. The Manager never modifies an Addrs slice after
// passing it to Commit (index lists are replaced, not edited), so a store
// may keep it instead of copying it.
type IndexChange struct {
	Identity string
	Addrs    []netip.Addr
}

// Txn is a set of changes applied atomically by Store.Commit.
type Txn struct {
	Leases []Change
	Index  []IndexChange
}

func (t *Txn) empty() bool { return len(t.Leases) == 0 && len(t.Index) == 0 }

// ConflictError is returned by Store.Commit when an address key's version
// was not the expected one. Current is the key's record now (nil: absent).
type ConflictError struct {
	Addr     netip.Addr
	Expected uint64
	Current  *Record
}

func (e *ConflictError) Error() string {
	var have uint64
	if e.Current != nil {
		have = e.Current.Version
	}
	return fmt.Sprintf("lease: store conflict on %s: expected version %d, have %d", e.Addr, e.Expected, have)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
