// Package boltstore is the embedded lease.Store of the gateway: one bbolt
// file with a bucket of lease records keyed by the 4-byte address (value:
// version, state, identity, session, endpoint, transport, times) and a
// bucket of identity → addresses.
//
// Commits are group-committed by one goroutine: every commit queued while
// the previous write transaction was being fsync'd goes into the next one
// (with those arriving within BoltOptions.CommitDelay, 6 ms, when the store
// is busy), so concurrent allocations share one transaction and one fsync
// while a lone commit is written at once; a compare-and-swap failure of one commit is
// reported to its caller without failing the others of the batch. An acknowledged commit survives kill -9 (tested by killing a
// child process mid-allocation). Opening a file locked by another process
// fails after BoltOptions.Timeout with ErrLocked; a damaged or foreign
// file fails with ErrCorrupt, naming the path. As in etcd, the freelist
// is not written by every commit (NoFreelistSync) but rebuilt at open.
package boltstore
