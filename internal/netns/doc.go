// Package netns is a test helper for end-to-end tests in Linux network
// namespaces: named namespaces (prefix "dstm"), veth pairs, addresses and
// routes, functions run inside a namespace on a locked OS thread, processes
// started through `ip netns exec`, and the client–gateway–server Topology.
//
// Everything is removed in t.Cleanup, also when the test fails. A namespace's
// links go only once the last file descriptor in it (TUN devices, sockets) is
// closed, so tests close their own resources through t.Cleanup too.
//
// Tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); call SkipUnlessRoot first.
package netns
