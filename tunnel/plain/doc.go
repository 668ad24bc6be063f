// Package plain is the v4v6 transport: inner IPv4 packets carried directly in
// IPv6 with next header 4 (IPv4-in-IPv6, classic DSTM) on a raw IPv6 socket,
// without a tunnel device.
//
// One socket bound to the local IPv6 address serves every peer. Its reader
// goroutine reads batches with recvmmsg and hands each packet to the
// tunnel.Receiver registered for its outer IPv6 source, consecutive packets
// of one peer in one call; packets from other sources are dropped and
// counted, since the kernel delivers every next-header-4 packet to the
// socket. Writes use sendmmsg. The socket buffers are forced past the
// sysctl limits where permitted: a raw socket whose buffer overflows makes
// the kernel answer with ICMPv6 parameter problems.
//
// The gateway uses Listen and Register; a client uses Dial, the same socket
// with one peer. Both need CAP_NET_RAW. Batch I/O is Linux-only.
package plain
