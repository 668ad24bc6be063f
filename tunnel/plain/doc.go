// Package plain is the v4v6 transport: inner IPv4 packets carried directly in
// IPv6 with next header 4 (IPv4-in-IPv6, classic DSTM), sent and received on
// a raw IPv6 socket without any tunnel device.
//
// One socket bound to the local IPv6 address serves every peer. Its single
// reader goroutine (routineReadOutside) reads with recvmmsg in batches and
// hands each packet to the tunnel.Receiver registered for the packet's outer
// IPv6 source; packets from unregistered sources are dropped and counted,
// because the kernel delivers every next-header-4 packet addressed to the
// socket to it. Writes use sendmmsg, one call per batch. Socket buffers are
// set to SocketBuffer with SO_RCVBUFFORCE/SO_SNDBUFFORCE (root; this does not
// depend on the read-only sysctls of containers), falling back to
// SO_RCVBUF/SO_SNDBUF: a raw socket whose buffer overflows makes the kernel
// count Ip6InUnknownProtos and answer with ICMPv6 parameter problems.
//
// The gateway uses Listen and Register; a client uses Dial, which is the same
// socket with one peer. Both need CAP_NET_RAW. The batch I/O is Linux-only
// and allocation-free per packet. The consecutive packets of one batch from the same peer
// reach its Receiver in one call.
package plain
