// Package lease hands out the IPv4 addresses of the DSTM gateway: pools,
// leases with lifetimes, sticky and static addresses, per-identity session
// limits, expiry and events, on top of a Store that is the authority.
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
// The Manager's memory is a cache of the Store. An operation is planned under
// the Manager's lock, marks the keys it touches busy and commits without the
// lock, so that concurrent operations coalesce in the store.
//
// A store that is its Manager's only writer (Exclusive, as boltstore) is not
// sent what a crash does not need: offers that change nothing but their own
// address, and sessions' releases from active to held. A restart holds every
// active record for its identity (ReleaseAll), and Flush writes the kept
// releases when the gateway stops. A shared store gets every change: its
// records are what reserve addresses against the other gateways.
package lease
