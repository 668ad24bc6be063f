// Package control is the gateway's TSP control plane: TSP sessions over TCP, TLS (TSP-SSL)
// and UDP, each driving a tsp server machine whose backend turns create, accept and delete
// into lease operations and data-plane changes.
//
// A Server owns the session table and every session in it. It serves the TSP port's TCP
// connections (ServeTCP: TLS with ALPN tsp/2 or none is TSP-SSL, ALPN http/1.1 goes to the
// enrollment API, anything else is plain TSP), TSP datagrams from the UDP port (UDP) and the
// DTLS data channels that the DTLS server authenticated (BindDTLS). It ends sessions whose
// lease ended (FollowLeases), revoked sessions (CloseRevoked) and kicked ones (Kick).
//
// The gateway package wires a Server to the listeners, the lease manager, the TEP and the
// transports; nothing here opens a socket.
package control
