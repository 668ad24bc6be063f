// Package boltstore is the embedded lease.Store of the gateway: one bbolt
// file with a bucket of lease records keyed by the 4-byte address and a
// bucket of identity → addresses.
//
// One goroutine group-commits: the commits queued while the previous write
// transaction was being synced, and when the store is busy those arriving
// within BoltOptions.CommitDelay, share one transaction and one fsync; a lone
// commit is written at once. A compare-and-swap failure is reported to its
// caller without failing the rest of the batch. An acknowledged commit
// survives kill -9. As in etcd, the freelist is not written by every commit
// (NoFreelistSync) but rebuilt at open.
package boltstore
