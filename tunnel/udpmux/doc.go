// Package udpmux serves the gateway's one UDP port (default 3653) for two
// protocols at once: TSP over UDP (RFC 5572 "reliable UDP" framing) and DTLS.
//
// A Mux owns one or more already opened UDP sockets (typically one IPv6
// socket, optionally a separate IPv4 socket). It runs one reader goroutine
// per socket, reads datagrams in batches (recvmmsg through golang.org/x/net
// when BatchSize > 1) and dispatches each datagram by its first byte:
//
//	0xF0–0xFF  TSP (the high nibble of the TSP UDP header is 0xF)
//	20–25      DTLS (change_cipher_spec, alert, handshake, application_data,
//	           heartbeat, tls12_cid)
//	other      dropped and counted (Stats.DroppedJunk)
//
// Handlers receive the datagram only for the duration of the call and must
// copy what they keep. Replies go out through Mux.WriteTo, which picks the
// socket by address family. The Mux sets its sockets' kernel buffers itself
// (SO_RCVBUFFORCE/SO_SNDBUFFORCE when privileged, SO_RCVBUF/SO_SNDBUF
// otherwise).
package udpmux
