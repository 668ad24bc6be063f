// Package tsp implements the Tunnel Setup Protocol (RFC 5572) as real
// clients speak it (gogoc 1.2 in v4v6 mode, byte for byte), plus this
// project's authenticated tunnel types v4dtlsv6, v4tlsv6 and v4anyv6.
//
// The package does no I/O. It provides:
//
//   - codecs for every message: Version, Capability, Authenticate, Status,
//     Content-length framing (MarshalContent/ParseContent), the <tunnel>
//     element (Tunnel.Marshal/ParseTunnel) and the UDP header
//     (Header, ParseDatagram);
//   - Splitter, which cuts a TCP/TLS byte stream into messages;
//   - Server, the server session state machine, talking to the gateway
//     through the Backend interface, and DatagramSession, which wraps a UDP
//     Server with header echo and retransmission replay;
//   - Client, the client session state machine.
//
// SASL mechanisms live in the sasl sub-package.
//
// Driving a Server on TCP or TLS: feed read bytes to a Splitter, pass each
// message from Splitter.Next to Server.Step, write every returned Reply in
// its own write (pausing DigestStatusPause before one marked Separate),
// and close the connection when Step returns an error or State() is
// StateClosed. On UDP: pass each datagram to DatagramSession.Handle and
// send back the datagram it returns.
//
// Tolerance is limited to what real clients need: leading NUL bytes before
// a message, CRLF or LF line ends, keyword case. Everything else is parsed
// strictly, sizes are bounded (MaxDatagramPayload, MaxStreamMessage,
// MaxLine) and no input makes the package panic.
//
// The protocol as implemented, with our extensions, is documented in
// docs/protocol.md.
package tsp
