// Package proxy serves SOCKS5 (RFC 1928, CONNECT) and HTTP proxies (CONNECT, and plain
// requests in absolute form) on loopback listeners and dials through a userspace network: the
// rootless client's netstack, which carries the connections in the tunnel without a TUN
// device. Names are resolved there too, by the DNS servers the gateway pushed.
package proxy
