// Package tunnel holds what the data-plane transports share: the Link and Receiver contracts and the transport names.
//
// A transport (v4v6 in package plain, v4dtlsv6 and v4tlsv6 in their own
// packages) turns one client session's outer channel into a Link, and hands
// every inner IPv4 packet it receives to the session's Receiver (the TEP's
// *tep.Session). The TEP checks inner packets itself (source = lease, MSS,
// MTU), so transports only frame, authenticate and demultiplex.
//
// Batching: a Receiver may also have a method ReceivePackets(pkts [][]byte)
// taking several packets of the same peer at once (the TEP's sessions do;
// see plain.BatchReceiver). Transports that read in batches should check for
// it with a type assertion and call it once per batch, so that the TEP can
// write the batch to the TUN device in one call. The same rule as for
// ReceivePacket applies: do not retain pkts.
//
// Ownership: whoever creates a Link closes it. The TEP never closes links;
// Session.SetLink only attaches and detaches them. WritePackets may block
// while the transport is congested, but must return promptly once the link
// is closed.
package tunnel
