// Package boltstore is the embedded lease.Store of the gateway: one bbolt
// file with a bucket of lease records keyed by the 4-byte address and a
// bucket of identity → addresses. One goroutine group-commits concurrent
// commits into one transaction and one fsync; a compare-and-swap failure
// fails only its own commit.
package boltstore
