package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Store is the authority on leases; the Manager's memory is a cache of it.
// Every implementation guarantees:
//
//   - One key per address holds the record of a non-free lease; a free
//     address has no record.
//   - Every key has a version: 0 when absent, and a value on every put that
//     the key has not had since it was last absent (bbolt and memory count
//     1, 2, … from each creation; etcd uses the key's ModRevision, unique in
//     the store's history, so a Watcher's versions only grow). A store that
//     does not count reports the new version of each written key in
//     Change.Next.
//   - Commit applies a Txn atomically. Each lease change carries the version
//     the caller expects (Prev); if any key differs, nothing is applied and
//     Commit returns a *ConflictError with that key's current record.
//     Claiming a free address is a compare-and-swap on "absent".
//   - The identity index is a stickiness hint written without compare; the
//     address keys alone decide who owns what.
//   - A Commit that returned nil survives a crash (kill -9).
//   - Commit is safe for concurrent use, and should coalesce concurrent
//     commits.
//   - Commit does not keep txn, its Leases slice or its Lease pointers after
//     it returns (the Manager reuses them); it may keep IndexChange.Addrs.
type Store interface {
	// Load returns every lease record and the identity index.
	Load(ctx context.Context) (Snapshot, error)
	Commit(ctx context.Context, txn Txn) error
}

// exclusiveStore is implemented by a Store that may be its Manager's only
// writer (see the package documentation). A shared store must not claim it.
type exclusiveStore interface {
	Exclusive() bool
}

// Watcher is implemented by a shared store (etcd): several gateways write
// it, and each Manager follows the others' changes (Manager.Follow).
type Watcher interface {
	// Watch calls apply, in revision order and one store transaction or
	// more at a time, with every change after revision from (this
	// process's own too: the Manager skips what its cache has already, by
	// version). It retries lost connections itself and returns ctx's error
	// when ctx ends, or an error wrapping ErrResync when changes were lost
	// (the history was compacted): the caller then loads the store again.
	Watch(ctx context.Context, from int64, apply func([]Update)) error
}

// Update is one change seen by a Watcher: of an address key (Addr valid) or
// of an identity index entry (Identity set).
type Update struct {
	Addr netip.Addr
	// Revision is the store revision of the change (a Watcher's versions are revisions).
	Revision int64
	// Record is the key's new record; nil: deleted.
	Record *Record
	// Prev is the record before a delete, when the store knows it.
	Prev *Record
	// Orphaned marks a delete done by the store when the record's owner
	// lost its ownership (its etcd lease expired): a dead gateway's session.
	Orphaned bool

	Identity string
	Addrs    []netip.Addr // the identity's new index entry (empty: deleted)
}

// ErrResync is wrapped by Watcher.Watch when it cannot continue from where
// it was: the Manager must load a snapshot again.
var ErrResync = errors.New("lease: store watch must start again from a snapshot")

// batchLimiter is implemented by a store that bounds the changes of one
// Commit (etcd: --max-txn-ops).
type batchLimiter interface {
	MaxChanges() int
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
	// Revision is the store revision the snapshot was read at (a Watcher
	// continues from it); 0 for a store that is not a Watcher.
	Revision int64
}

// Change replaces the record of one address key.
type Change struct {
	Addr netip.Addr
	// Prev is the version the caller expects the key to have (0: absent).
	Prev uint64
	// Lease is the new record; nil deletes the key.
	Lease *Lease
	// Next is set by a Commit that succeeded, for a put, to the key's new version when the
	// store does not count (0: Prev + 1).
	Next uint64
}

// IndexChange replaces the identity index entry of one identity; an empty
// Addrs deletes it. The Manager never modifies Addrs after Commit, so a store
// may keep it.
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
