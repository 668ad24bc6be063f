// Package tep is the tunnel end point: the data plane between the gateway's
// TUN device (the IPv4 "inside") and the sessions' tunnel links (the IPv6
// "outside").
//
// One goroutine reads the TUN device and puts each packet on its session's
// bounded queue; one writer goroutine per session drains that queue into the
// session's tunnel.Link. A lone packet for a link that writes without waiting
// on its peer (tunnel.DirectWriter) goes to the link from the reader itself. Packets from a link go through Session.ReceivePackets
// to the TUN device. Packets for a pool address without a session get a
// rate-limited ICMP host unreachable, so the pools need no discard route.
// docs/dataplane.md describes the drop policy, the MTU and the counters.
package tep
