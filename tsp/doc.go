// Package tsp implements the Tunnel Setup Protocol (RFC 5572) as real
// clients speak it (gogoc 1.2 in v4v6 mode, byte for byte), plus this
// project's authenticated tunnel types v4dtlsv6, v4tlsv6 and v4anyv6.
//
// The package does no I/O. It provides codecs for every message (the
// <tunnel> element, Content-length framing, the UDP Header), a Splitter that
// cuts a TCP/TLS byte stream into messages, the server machine Server, which
// talks to the gateway through Backend and is wrapped on UDP by
// DatagramSession, and the client machine Client. SASL mechanisms live in
// the sasl sub-package.
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
// strictly, sizes are bounded and no input makes the package panic.
// docs/protocol.md documents the protocol with our extensions.
package tsp
