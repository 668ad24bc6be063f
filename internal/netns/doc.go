// Package netns is a test helper for end-to-end tests in Linux network
// namespaces. It creates named namespaces whose names start with "dstm",
// veth pairs between them, IPv4 and IPv6 (nodad) addresses and routes, runs
// functions inside a namespace on a locked OS thread, starts processes in a
// namespace through `ip netns exec`, and builds the three-namespace topology
// the DSTM end-to-end tests share:
//
//	client (IPv6 only) ── veth ── gateway ── veth ── server (IPv4 only)
//
// Everything is removed in t.Cleanup, also when the test fails: deleting a
// namespace destroys its links once the last file descriptor in it (TUN
// devices, sockets) is closed, so tests close their own resources through
// t.Cleanup as well (cleanups run last-in first-out).
//
// Tests that use this package need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); call
// SkipUnlessRoot first.
package netns
