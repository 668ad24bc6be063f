// Package tunnel holds what the data-plane transports share: the Link and Receiver contracts
// and the transport names.
//
// A transport (v4v6 in package plain, v4dtlsv6 in dtls, v4tlsv6 in stream) turns one
// session's outer channel into a Link and hands the inner IPv4 packets it receives to the
// session's Receiver: the TEP's *tep.Session on the gateway, the TUN side on the client. The
// receiver checks inner packets itself (source = lease, MSS, MTU), so transports only frame,
// authenticate and demultiplex.
//
// Batching: a transport hands over as many consecutive packets of one peer as one read
// returned, in one ReceivePackets call, so that the receiver can write them to its TUN device
// in one call (and the kernel can coalesce them).
//
// Ownership: whoever creates a Link closes it. Receivers never close links. WritePackets may
// block while the transport is congested, but returns promptly once the link is closed.
package tunnel
