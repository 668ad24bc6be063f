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
// An offer waits OfferTimeout for Accept; an active lease lives Lifetime from
// Accept or its last Renew; a held lease keeps the address for its identity
// for HoldTime, unless its pool has no free address left, when the oldest
// held address goes to someone else.
//
// Accept records the address in the identity's sticky index (persisted, most
// recent first, at most 8): the identity gets it back whenever it is free or
// held for it, and others get it only when no clean address is left. Static
// reservations are offered to their identity alone and come before sticky
// ones. The session limit (offered + active per identity) either replaces the
// oldest lease (EventReplaced) or refuses the offer (ErrSessionLimit).
//
// # Cache and store
//
// The Manager's memory is a cache of the Store, rebuilt by New; a pool's
// never-used addresses are an interval set, so a /8 costs no more than a /24.
// An operation is planned under the Manager's lock, marks the keys it touches
// busy and commits without the lock, so that concurrent operations coalesce
// in the store; then it publishes its events or undoes the cache change. A
// conflict (another gateway took the address) refreshes the cache and Offer
// retries.
//
// A store that is its Manager's only writer (Exclusive, as boltstore) is not
// sent what a crash does not need: offers that change nothing but their own
// address, and sessions' releases from active to held. A restart holds every
// active record for its identity (ReleaseAll), and Flush writes the kept
// releases when the gateway stops. A shared store gets every change: its
// records are what reserve addresses against the other gateways.
//
// # Expiry and events
//
// Offered, active and held leases sit in one min-heap by Expires; Expire pops
// what is due at the injected clock's Now, and Run calls it every second.
// Events go to every subscriber's bounded channel in commit order; a full
// channel drops the event for that subscriber only and counts it
// (DroppedEvents), so the allocator never blocks on a slow consumer.
package lease
