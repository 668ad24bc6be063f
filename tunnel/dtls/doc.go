// Package dtls is the v4dtlsv6 transport: inner IPv4 packets in DTLS 1.2
// records (pion/dtls v3) on the gateway's shared UDP port.
//
// # Server
//
// Server implements udpmux.Handler. It demultiplexes DTLS datagrams to
// per-peer virtual net.PacketConns, each under one pion server Conn:
//
//   - a datagram holding a tls12_cid record (content type 25) goes to the
//     peer that issued that connection ID (CIDs are CIDLen = 8 random bytes,
//     so the CID sits at a fixed offset in the record header);
//   - any other datagram goes to the peer of its source address;
//   - a ClientHello (content type 22, epoch 0) from an unknown address
//     starts a new peer and handshake, within MaxHandshakes concurrent
//     handshakes and MaxSessions peers; anything else unknown is dropped.
//
// Peers roam (RFC 9146): pion accepts an authenticated CID record from a
// new address, answers there, and the server re-keys the peer's address
// entry when pion first writes to the new address. Nothing unauthenticated
// moves a peer.
//
// The handshake requires client certificates (verified against ClientCAs
// and/or VerifyPeerCertificate), the cookie exchange (HelloVerifyRequest)
// and the extended master secret. The client's first application record
// is the tsp.TokenLen-byte session token from the TSP offer; the server calls
// ServerConfig.Bind with it, the client's certificate and the link, and
// acknowledges a successful bind by echoing the token. The client resends
// the token until it sees any record from the server. After that every
// record carries one IPv4 packet in each direction; a record equal to the
// token is a retransmission and is answered, not forwarded.
//
// # Client
//
// Dial runs the client handshake over a net.PacketConn (offering to send
// CIDs, not asking for its own), binds with the token and returns a
// ClientLink. RebindConn lets the client move to a new local socket mid
// session: the server follows through the CID, with no new handshake.
//
// # Limits and drop policies
//
// Each peer's datagram queue holds QueueLen datagrams; when full, the
// newest is dropped and counted. Established links idle for IdleTimeout
// (checked with one read deadline per period, not per packet) are closed.
// Records that are not IPv4 packets are dropped and counted.
package dtls
