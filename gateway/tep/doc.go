// Package tep is the tunnel end point: the data plane between the gateway's
// TUN device (the IPv4 "inside") and the sessions' tunnel links (the IPv6
// "outside").
//
// Inside → outside: one goroutine reads batches from the TUN device, finds
// the destination's session in a lock-free registry, clamps the MSS of SYNs,
// answers oversize DF packets with ICMP fragmentation-needed and puts the
// packet on the session's bounded queue; one writer goroutine per session
// drains that queue in batches into its tunnel.Link. A session gets its queue
// and writer with its first link; without a link its packets are dropped as
// link_error. Packets for a pool address without a session are dropped and
// answered with a rate-limited ICMP host unreachable, so the pools need no
// discard route.
//
// Outside → inside: Session.ReceivePackets drops packets whose inner source
// is not the session's lease, clamps the MSS, answers oversize DF packets
// through the tunnel and writes the rest to the TUN device in one batch.
//
// Queues are bounded and buffers pooled; docs/dataplane.md describes the drop
// policy, the MTU and the counters.
package tep
