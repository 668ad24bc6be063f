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
	// Timeout is how long to wait for the file lock (default 1s).
	Timeout time.Duration
	// MaxBatchSize bounds the commits applied in one bbolt transaction
	// (DefaultMaxBatchSize when zero).
	MaxBatchSize int
	// CommitDelay is how long the committer waits for more commits when it
	// finds several queued (the store is busy) before it writes them
	// (DefaultCommitDelay when zero, none when negative). A lone commit is
	// written at once.
	CommitDelay time.Duration
	// NoSync skips fsync: only for tests and benchmarks of the CPU cost;
	// a crash may then lose acknowledged commits.
	NoSync bool
}

// DefaultLockTimeout is the lock wait used when BoltOptions.Timeout is 0.
const DefaultLockTimeout = time.Second

// DefaultMaxBatchSize is the most commits one bbolt transaction applies
// when BoltOptions.MaxBatchSize is 0.
const DefaultMaxBatchSize = 1024

// DefaultCommitDelay is the CommitDelay used when BoltOptions.CommitDelay is
// 0. A transaction costs two fdatasyncs and the CPU to rewrite its pages,
// which a busy gateway needs for its sessions; the delay makes fewer, larger
// transactions at the price of commit latency when busy (a lone commit is
// written at once). Measured on the 2-vCPU test machine (plain TSP session
// benchmarks, 256 clients):
//   - 2026-11-25, three commits per session: no delay made about one
//     transaction per 4 commits; 2-3 ms gave 25-35% more sessions/s, and
//     10 ms was worse again (each session waited on it three times);
//   - 2026-11-26, one commit per session (offers and releases kept in
//     memory): over TCP none 3,490/s, 1 ms 4,530/s, 3 ms 5,270/s, 6 ms
//     5,590/s (interleaved runs); in 12 more ABBA pairs 3 ms 4,750/s and
//     6 ms 5,120/s (medians 5,130 and 5,780), UDP ahead in 4 of 4 pairs,
//     TSP-SSL and BenchmarkAllocBolt unchanged; 10 and 15 ms no better.
const DefaultCommitDelay = 6 * time.Millisecond

// commitQueue is the capacity of the queue in front of the committer. A
// Commit that finds it full blocks until the committer takes a batch:
// callers are slowed down, nothing is dropped.
const commitQueue = 4096

// ErrClosed is returned by Commit after Close.
var ErrClosed = errors.New("lease store is closed")

// BoltStore is a lease.Store in one bbolt file.
//
// Commits are group-committed: one goroutine (the committer) takes every
// commit queued while the previous bbolt transaction was being written and
// fsync'd, and, if that is more than one, those arriving within
// CommitDelay after; it applies them all in one transaction and answers
// each caller. A lone commit is written at once (bbolt's DB.Batch made
// every commit wait for its 10 ms timer); a busy store amortises one fsync
// over many commits.
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

// commitReq is one queued Commit and, once done is signalled, its result.
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
	// Like etcd: the freelist is not written on every commit (it is
	// rebuilt by scanning at open, crash-safe) and kept as a hashmap.
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

// Exclusive reports that the store has one writer: the file is locked by
// this process for as long as it is open. The lease Manager then keeps
// offers and sessions' releases in memory instead of committing them (see
// lease.Manager.Offer and lease.Manager.Release).
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

// Commit applies txn atomically (see lease.Store). Concurrent commits are
// group-committed into one bbolt transaction and one fsync (see
// BoltStore); a conflicting txn is not applied but does not fail the
// others of its transaction. Once queued, a commit is waited for even if
// ctx ends: it may already be on disk, and the caller must know.
func (s *BoltStore) Commit(ctx context.Context, txn lease.Txn) error {
	if err := ctx.Err(); err != nil {
		return err
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

// committer applies queued commits in batches until Close: every commit
// queued while the previous transaction was written, and, when that is more
// than one (the store is busy), those that arrive within s.delay after.
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

// gather appends queued commits to batch up to s.maxBatch: those already
// queued when wait is nil, else those arriving until wait fires.
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

// applyBatch writes every commit of batch in one transaction, recording
// each one's conflict; an error fails them all (nothing is written).
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
