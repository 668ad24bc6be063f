// Package acl is the access-rule engine of the TEP: the rules' configuration
// types and their parsers, a compiler that turns one access block into a
// Set that classifies a packet in O(log n) without allocating, and a bounded
// connection-tracking Table with an injected clock.
//
// It does no I/O and keeps no package state, so a TEP can compile the rules
// of a session from the identity's resolved policy alone, wherever it runs.
//
// Rules only allow. A packet from a client (Outbound) passes when an
// outbound rule allows it or when it answers a tracked flow the IPv4 side
// opened (an allowed inbound packet); a packet to a client (Inbound) passes
// when an inbound rule allows it or when it answers a tracked outbound flow.
// docs/decisions/0009-access-rules.md explains the defaults and the limits.
package acl
