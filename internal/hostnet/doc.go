// Package hostnet configures the host for the data plane: the TUN device, its address and
// routes. On Linux (the gateway and the client) it speaks netlink; on macOS and FreeBSD (the
// client) it runs ifconfig and route as wg-quick does, on Windows netsh, all from commands
// built by the functions in commands.go, which tests check on any platform.
//
// A Host records every change it makes (TUN device, addresses, routes) and
// undoes them in reverse order on Close. The client needs no IPv6 host-route
// exception for the gateway: the tunnel's outer packets are IPv6 and never
// match IPv4 routes.
//
// On Linux, netlink operations act on the network namespace the Host was created in;
// CreateTUN creates the device in the namespace of the calling thread.
package hostnet
