// Package lease hands out the IPv4 addresses of the DSTM gateway: pools,
// leases with lifetimes, sticky and static addresses, per-identity session
// limits, expiry and events, on top of a Store that is the authority.
//
// # States
//
//	              Offer                      Accept
//	+--------+ -----------> +---------+ ---------------> +--------+
//	|  free  |              | offered |                  | active |<--+ Renew
//	+--------+ <----------- +---------+                  +--------+---+
//	  ^   ^    OfferTimeout or Release |                   |
//	  |   |    (address not the        | OfferTimeout or   | Release, ReleaseIdentity,
//	  |   |     identity's own)        | Release (sticky   | lifetime ends (EventExpired),
//	  |   |                            v  or static)       | replaced (EventReplaced)
//	  |   |  HoldTime ends        +--------+               |
//	  |   +---------------------- |  held  | <-------------+
//	  |                           +--------+
//	  +---- (held only) given to another identity when no free address is left
//
// An offered lease waits OfferTimeout (30s) for Accept. An active lease
// lives Lifetime (1h) from Accept or its last Renew. A held lease keeps
// the address for its identity for HoldTime (24h); only when a pool has no
// free address left is the oldest held address taken for someone else,
// and the old identity's sticky entry is dropped.
//
// Sticky addresses: Accept records the address in the identity's index
// (persisted, most recent first, at most 8). An identity gets its own
// address back whenever it is free or held for it, even after the hold
// ended; a free address remembered by an identity is reused for others
// only after every clean address is gone (oldest first), then held ones.
// Static reservations are never offered to anyone else, and are preferred
// over sticky ones. The session limit (MaxSessions, per identity, counts
// offered+active) either releases the identity's oldest lease
// (ReplaceOldest: EventReplaced lets the gateway kick that session) or
// refuses the offer (Refuse: ErrSessionLimit). An Offer for a session that
// already has a lease returns that lease.
//
// # Memory
//
// A pool's never-used addresses are an interval set walked by a "next"
// cursor (a /8 with nothing taken is one interval), so New costs the same
// for a /8 as for a /24; only leases and remembered addresses cost memory.
// The cache is rebuilt from the Store by New.
//
// # Store contract
//
// See Store: one key per non-free address with an etcd-style version; a
// Commit is atomic and each address change is a compare-and-swap on the
// version it expects (claiming a free address = "key does not exist");
// the identity index is a hint written without compare. The Manager plans
// an operation under its lock, marks the keys it touches busy, commits
// without the lock (so concurrent operations coalesce in the store, e.g.
// boltstore group-commits: one fsync for many allocations), then publishes events
// or undoes the cache change. A conflict (another gateway claimed the
// address) refreshes the cache from the store's record and Offer retries.
// A store that is its Manager's only writer says so (Exclusive); offers
// that change nothing but their own address, and sessions' releases from
// active to held, then stay in memory, and the cached slot keeps the
// version of the record the store still has (none, or the identity's held
// or active lease). A restart holds every active record for its identity
// (ReleaseAll), so the store stays what a crash needs; Flush writes the
// releases kept in memory when the gateway stops.
// Implementations: NewMemStore here, boltstore.OpenBolt (embedded
// default), and a future etcd store for gateways sharing pools.
//
// # Expiry
//
// No timer per lease: every offered, active and held lease sits in one
// min-heap ordered by Expires; Expire pops what is due at Now() (the
// injected clock) and commits the changes in batches; Run calls it every
// second. Why a heap and not timers or a wheel is written at expiryHeap.
//
// # Events
//
// Granted, renewed, released, expired and replaced events go to every
// subscriber's bounded channel in commit order. A full channel drops the
// new event for that subscriber only and counts it (DroppedEvents): the
// allocator never blocks on a slow consumer.
package lease
