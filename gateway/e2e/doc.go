// Package e2e holds the end-to-end tests of the DSTM gateway: the real dstm-gateway and
// dstm-client binaries, built once per test run, run in three network namespaces — an
// IPv6-only client, the gateway, an IPv4-only server — and the tests fetch pages, move bulk
// data, roam, restart, revoke and tear down through the tunnel, checking the client's and the
// gateway's own views (status --json, sessions --json, /metrics) along the way.
//
// The package has no non-test code. The tests need root and /dev/net/tun and skip otherwise;
// they also skip under -short.
package e2e
