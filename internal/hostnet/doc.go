// Package hostnet configures the Linux host for the data plane through
// netlink; the gateway and the client share it.
//
// A Host records every change it makes (TUN device, addresses, routes) and
// undoes them in reverse order on Close. The client needs no IPv6 host-route
// exception for the gateway: the tunnel's outer packets are IPv6 and never
// match IPv4 routes.
//
// Netlink operations act on the network namespace the Host was created in;
// CreateTUN creates the device in the namespace of the calling thread.
package hostnet
