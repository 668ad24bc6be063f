package boltstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/dstmgw/dstm/gateway/lease"
)

// Errors returned by OpenBolt and the store; test them with errors.Is.
var (
	// ErrLocked means another process holds the file lock.
	ErrLocked = errors.New("lease store is locked by another process")
	// ErrCorrupt means the file is not a lease store or is damaged.
	ErrCorrupt = errors.New("lease store is corrupt")
)

// formatVersion is stored in the meta bucket; a file of another format is
// refused rather than misread.
const formatVersion = "dstm-lease-1"

var (
	bucketMeta   = []byte("meta")
	bucketLeases = []byte("leases")
	bucketIndex  = []byte("index")
	keyFormat    = []byte("format")
)

// BoltOptions tunes OpenBolt. The zero value is the production default.
type BoltOptions struct {
	// Timeout is how long to wait for the file lock (default 1s).
	Timeout time.Duration
	// MaxBatchSize and MaxBatchDelay tune commit coalescing (bbolt
	// defaults 1000 and 10ms when zero).
	MaxBatchSize  int
	MaxBatchDelay time.Duration
	// NoSync skips fsync: only for tests and benchmarks of the CPU cost;
	// a crash may then lose acknowledged commits.
	NoSync bool
}

// DefaultLockTimeout is the lock wait used when BoltOptions.Timeout is 0.
const DefaultLockTimeout = time.Second

// BoltStore is a lease.Store in one bbolt file.
type BoltStore struct {
	db   *bolt.DB
	path string
}

var _ lease.Store = (*BoltStore)(nil)

// OpenBolt opens or creates the lease store at path.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultLockTimeout
	}
	// Like etcd: the freelist is not written on every commit (it is
	// rebuilt by scanning at open, crash-safe) and kept as a hashmap.
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.Timeout, NoSync: opts.NoSync,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, openError(path, opts.Timeout, err)
	}
	if opts.MaxBatchSize > 0 {
		db.MaxBatchSize = opts.MaxBatchSize
	}
	if opts.MaxBatchDelay > 0 {
		db.MaxBatchDelay = opts.MaxBatchDelay
	}
	s := &BoltStore{db: db, path: path}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

func openError(path string, timeout time.Duration, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("lease store %s is locked by another process (waited %s): %w", path, timeout, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrInvalidMapping):
		return fmt.Errorf("lease store %s: %w: %v", path, ErrCorrupt, err)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, os.ErrPermission):
		return fmt.Errorf("lease store %s: %w", path, err)
	}
	return fmt.Errorf("lease store %s: open: %w", path, err)
}

// init creates the buckets of a new file and checks the format of an old one.
func (s *BoltStore) init() (err error) {
	defer recoverCorrupt(s.path, &err)
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("lease store %s: %w", s.path, err)
		}
		switch f := meta.Get(keyFormat); {
		case f == nil && tx.Bucket(bucketLeases) == nil:
			if err := meta.Put(keyFormat, []byte(formatVersion)); err != nil {
				return err
			}
		case string(f) != formatVersion:
			return fmt.Errorf("lease store %s: %w: format %q, want %q", s.path, ErrCorrupt, f, formatVersion)
		}
		for _, name := range [][]byte{bucketLeases, bucketIndex} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("lease store %s: %w", s.path, err)
			}
		}
		return nil
	})
}

// recoverCorrupt turns a bbolt panic on a damaged page into ErrCorrupt.
func recoverCorrupt(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("lease store %s: %w: %v", path, ErrCorrupt, r)
	}
}

// Path returns the file name.
func (s *BoltStore) Path() string { return s.path }

// Close closes the file and releases its lock.
func (s *BoltStore) Close() error { return s.db.Close() }

// Load reads every record and the identity index.
func (s *BoltStore) Load(ctx context.Context) (snap lease.Snapshot, err error) {
	if err := ctx.Err(); err != nil {
		return lease.Snapshot{}, err
	}
	defer recoverCorrupt(s.path, &err)
	snap.Index = make(map[string][]netip.Addr)
	err = s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("key %x: %w", k, err)
			}
			snap.Leases = append(snap.Leases, r)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketIndex).ForEach(func(k, v []byte) error {
			addrs, err := decodeIndex(v)
			if err != nil {
				return fmt.Errorf("identity %q: %w", k, err)
			}
			snap.Index[string(k)] = addrs
			return nil
		})
	})
	if err != nil {
		return lease.Snapshot{}, fmt.Errorf("lease store %s: load: %w", s.path, err)
	}
	return snap, nil
}

// Commit applies txn atomically (see lease.Store). Concurrent commits are
// coalesced into one bbolt transaction and one fsync by DB.Batch; a
// conflicting txn is not applied but does not fail the batch it rode in.
func (s *BoltStore) Commit(ctx context.Context, txn lease.Txn) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer recoverCorrupt(s.path, &err)
	var conflict *lease.ConflictError
	err = s.db.Batch(func(tx *bolt.Tx) error {
		// Batch may run this function more than once: start clean.
		conflict = nil
		var err error
		conflict, err = apply(tx, txn)
		return err
	})
	if err != nil {
		return fmt.Errorf("lease store %s: commit: %w", s.path, err)
	}
	if conflict != nil {
		return conflict
	}
	return nil
}

// apply checks every compare of txn, then writes it; on a failed compare
// it writes nothing and returns the conflict.
func apply(tx *bolt.Tx, txn lease.Txn) (*lease.ConflictError, error) {
	leases := tx.Bucket(bucketLeases)
	for _, c := range txn.Leases {
		have, err := currentVersion(leases, c.Addr)
		if err != nil {
			return nil, err
		}
		if have != c.Prev {
			cur, err := current(leases, c.Addr)
			if err != nil {
				return nil, err
			}
			return &lease.ConflictError{Addr: c.Addr, Expected: c.Prev, Current: cur}, nil
		}
	}
	for _, c := range txn.Leases {
		key := addrKey(c.Addr)
		if c.Lease == nil {
			if err := leases.Delete(key); err != nil {
				return nil, err
			}
			continue
		}
		if err := leases.Put(key, encodeRecord(lease.Record{Lease: *c.Lease, Version: c.Prev + 1})); err != nil {
			return nil, err
		}
	}
	index := tx.Bucket(bucketIndex)
	for _, c := range txn.Index {
		var err error
		if len(c.Addrs) == 0 {
			err = index.Delete([]byte(c.Identity))
		} else {
			err = index.Put([]byte(c.Identity), encodeIndex(c.Addrs))
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func current(b *bolt.Bucket, a netip.Addr) (*lease.Record, error) {
	v := b.Get(addrKey(a))
	if v == nil {
		return nil, nil
	}
	r, err := decodeRecord(v)
	if err != nil {
		return nil, fmt.Errorf("key %v: %w", a, err)
	}
	return &r, nil
}

// currentVersion reads only the version of a's record (0: absent).
func currentVersion(b *bolt.Bucket, a netip.Addr) (uint64, error) {
	v := b.Get(addrKey(a))
	if v == nil {
		return 0, nil
	}
	d := &decoder{b: v}
	if f := d.bytes(1); d.err == nil && f[0] != recordFormat {
		return 0, fmt.Errorf("key %v: %w: record format %d", a, ErrCorrupt, f[0])
	}
	ver := d.uvarint()
	if d.err != nil {
		return 0, fmt.Errorf("key %v: %w: %w", a, ErrCorrupt, d.err)
	}
	return ver, nil
}

func addrKey(a netip.Addr) []byte {
	a4 := a.As4()
	return a4[:]
}
