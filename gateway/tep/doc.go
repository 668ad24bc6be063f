// Package tep is the tunnel end point: the data plane between the gateway's
// TUN device (the IPv4 "inside") and the sessions' tunnel links (the IPv6
// "outside").
//
// Inside → outside: one goroutine (routineReadInside) reads batches from the
// TUN device, looks the destination up in the session registry (leased IPv4
// → *Session, lock-free), clamps the TCP MSS of SYNs, answers oversize DF
// packets with ICMP fragmentation-needed, and puts the packet on the
// session's bounded queue. One goroutine per session (routineWriteOutside)
// drains that queue in batches into the session's tunnel.Link. The queue and
// its writer are created by the session's first Session.SetLink with a link,
// not by AddSession: a session whose data channel never comes up costs no
// queue and no goroutine, and packets to a session without a link (none yet,
// or detached) are dropped as link_error without being queued. Packets for a
// pool address without a session are dropped, counted and answered with a
// rate-limited ICMP host unreachable, so the pools need no discard route.
//
// Outside → inside: a transport calls Session.ReceivePackets with a batch.
// The TEP drops packets whose inner source is
// not the session's lease, clamps the MSS, answers oversize DF packets with
// ICMP fragmentation-needed through the tunnel, and writes the rest to the
// TUN device in one batch.
//
// No goroutine is started per packet, every queue is bounded, and packet
// buffers come from pools; see docs/dataplane.md for the drop policy, the MTU
// choice and the counters.
package tep
