package boltstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
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
	Timeout      time.Duration // wait for the file lock
	MaxBatchSize int           // most commits in one bbolt transaction
	// CommitDelay is how long the committer waits for more commits when it
	// finds several queued; negative means none.
	CommitDelay time.Duration
	// NoSync skips fsync, for tests and benchmarks: a crash may then lose
	// acknowledged commits.
	NoSync bool
}

// Defaults for BoltOptions fields left zero.
const (
	DefaultLockTimeout  = time.Second
	DefaultMaxBatchSize = 1024
	// DefaultCommitDelay trades a few milliseconds of latency, when busy, for
	// fewer transactions: each costs two fdatasyncs and the CPU to rewrite
	// its pages, which a busy gateway needs for its sessions
	// (docs/benchmarks.md).
	DefaultCommitDelay = 6 * time.Millisecond
)

// commitQueue is the capacity of the queue in front of the committer. A full
// queue blocks Commit: callers are slowed down, nothing is dropped.
const commitQueue = 4096

// ErrClosed is returned by Commit after Close.
var ErrClosed = errors.New("lease store is closed")

// BoltStore is a lease.Store in one bbolt file. Its own committer replaces
// bbolt's DB.Batch, which delays even a lone commit by its timer.
type BoltStore struct {
	db       *bolt.DB
	path     string
	maxBatch int
	delay    time.Duration

	mu     sync.RWMutex // held for reading while queueing; for writing by Close
	closed bool
	reqs   chan *commitReq
	exited chan struct{} // closed when the committer has returned
	pool   sync.Pool     // of *commitReq
}

type commitReq struct {
	txn      lease.Txn
	conflict *lease.ConflictError
	err      error
	done     chan struct{}
}

var _ lease.Store = (*BoltStore)(nil)

// OpenBolt opens or creates the lease store at path.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultLockTimeout
	}
	// As etcd: the freelist is rebuilt at open, not written by every commit.
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.Timeout, NoSync: opts.NoSync,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, openError(path, opts.Timeout, err)
	}
	if opts.MaxBatchSize <= 0 {
		opts.MaxBatchSize = DefaultMaxBatchSize
	}
	if opts.CommitDelay == 0 {
		opts.CommitDelay = DefaultCommitDelay
	}
	s := &BoltStore{db: db, path: path, maxBatch: opts.MaxBatchSize, delay: opts.CommitDelay,
		reqs: make(chan *commitReq, commitQueue), exited: make(chan struct{})}
	s.pool.New = func() any { return &commitReq{done: make(chan struct{}, 1)} }
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	go s.committer()
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

// Exclusive reports true: the file is locked by this process while open.
func (s *BoltStore) Exclusive() bool { return true }

// Close waits for the commits already queued, then closes the file and
// releases its lock. Commit returns ErrClosed afterwards.
func (s *BoltStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	<-s.exited
	return s.db.Close()
}

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

// Commit applies txn atomically (see lease.Store). Once queued, a commit is
// waited for even if ctx ends: it may already be on disk, and the caller
// must know.
func (s *BoltStore) Commit(ctx context.Context, txn lease.Txn) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, c := range txn.Leases {
		// A single-node store has one writer; its records have no owner.
		if c.Lease != nil && c.Lease.Owner != "" {
			return fmt.Errorf("lease store %s: %v: owner %q: owners are for a shared store", s.path, c.Addr, c.Lease.Owner)
		}
	}
	r := s.pool.Get().(*commitReq)
	r.txn = txn
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		s.put(r)
		return fmt.Errorf("lease store %s: commit: %w", s.path, ErrClosed)
	}
	s.reqs <- r
	s.mu.RUnlock()
	<-r.done
	conflict, err := r.conflict, r.err
	s.put(r)
	if err != nil {
		return fmt.Errorf("lease store %s: commit: %w", s.path, err)
	}
	if conflict != nil {
		return conflict
	}
	return nil
}

func (s *BoltStore) put(r *commitReq) {
	r.txn, r.conflict, r.err = lease.Txn{}, nil, nil
	s.pool.Put(r)
}

// committer applies queued commits in batches until Close: those queued
// while the previous transaction was written and, if more than one, those
// arriving within s.delay.
func (s *BoltStore) committer() {
	defer close(s.exited)
	batch := make([]*commitReq, 0, s.maxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for r := range s.reqs {
		batch = s.gather(append(batch[:0], r), nil)
		if len(batch) > 1 && s.delay > 0 {
			timer.Reset(s.delay)
			batch = s.gather(batch, timer.C)
			timer.Stop()
		}
		err := s.applyBatch(batch)
		for _, r := range batch {
			if err != nil {
				r.conflict, r.err = nil, err
			}
			r.done <- struct{}{}
		}
		clear(batch)
	}
}

func (s *BoltStore) gather(batch []*commitReq, wait <-chan time.Time) []*commitReq {
	for len(batch) < s.maxBatch {
		var r *commitReq
		var ok bool
		if wait == nil {
			select {
			case r, ok = <-s.reqs:
			default:
				return batch
			}
		} else {
			select {
			case r, ok = <-s.reqs:
			case <-wait:
				return batch
			}
		}
		if !ok { // closed: Close is waiting for this batch
			return batch
		}
		batch = append(batch, r)
	}
	return batch
}

// applyBatch writes batch in one transaction, recording each commit's
// conflict; an error fails them all.
func (s *BoltStore) applyBatch(batch []*commitReq) (err error) {
	defer func() {
		// bbolt panics on some damaged pages.
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range batch {
			var err error
			if r.conflict, err = apply(tx, r.txn); err != nil {
				return err
			}
		}
		return nil
	})
}

// apply writes txn unless a compare fails; it then returns the conflict.
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
