// Package hostnet configures the Linux host for the data plane through
// netlink; the gateway and the client share it.
//
// A Host records every change it makes (TUN device, addresses, routes) and
// undoes them in reverse order on Close, which is idempotent. Gateway use:
// CreateTUN with the inner MTU, AddAddress with the inner gateway address,
// LinkUp, AddRoute for every lease pool, CheckIPv4Forwarding. Client use:
// CreateTUN, AddAddress with the lease as a /32, LinkUp, and either
// FullTunnelRoutes or the pushed split routes plus a /32 to the gateway's
// inner address (the keepalive target). No IPv6 host-route exception is
// needed: the tunnel's outer packets are IPv6 and never match IPv4 routes.
//
// All netlink operations act on the network namespace the Host was created
// in (its netlink handle is bound at New); CreateTUN creates the device in
// the namespace of the calling thread.
package hostnet
