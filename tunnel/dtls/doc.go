// Package dtls is the v4dtlsv6 transport: inner IPv4 packets in DTLS 1.2
// records (pion/dtls v3) on the gateway's shared UDP port.
//
// The Server demultiplexes datagrams to per-peer virtual net.PacketConns,
// each under one pion server Conn: a tls12_cid record (content type 25) goes
// to the peer that issued its connection ID, any other datagram to the peer
// of its source address; anything else but a ClientHello is dropped.
//
// A ClientHello from an address with no peer meets a stateless front first
// (RFC 6347 §4.2.1): without a valid cookie it is answered with a
// HelloVerifyRequest, at a bounded rate per source and in all, and nothing
// is kept. Only a ClientHello that returns the cookie, at message_seq 0,
// starts a peer, within MaxHandshakes, MaxSessions and its source's share of
// handshakes; its pion gets it without the cookie and does no exchange of
// its own. The client's part is helloConn, under the client's pion: it puts
// the cookie into the first ClientHello, so both pions see a server that
// skipped the HelloVerifyRequest, over the same transcript.
//
// Peers roam (RFC 9146): pion accepts an authenticated CID record from a new
// address, and the server moves the peer when pion first writes there.
// Nothing unauthenticated moves a peer.
//
// The handshake requires a client certificate and the extended master
// secret. The client's first application record is the session token from
// the TSP offer; the server calls ServerConfig.Bind with it and
// acknowledges a successful bind by echoing it. The client resends the
// token until it sees any record from the server. Every later record carries
// one IPv4 packet; a record equal to the token is a retransmission, answered
// and not forwarded.
//
// After the bind the server offers data records (tunnel/record, data.go):
// packets sealed with keys exported from this DTLS session, in datagrams
// that bypass pion on both sides (first byte 0x08 on the same port). A
// client that accepts sends them from then on, and so does the server once
// it has the accept or a data record that opens; either side without them
// stays on DTLS records. ServerConfig.NoDataRecords and
// ClientConfig.NoDataRecords turn them off. With version 2 of them (both
// sides speak it) a session ends by a close record, and the server lets the
// DTLS state go a second after the accept (detachFrom): the session is then
// its data-record state alone, with no pion Conn and no goroutine. The server opens data records
// on the UDP port's reader goroutines; the client's socket has a reader of
// its own (dataConn) that reads in batches, takes the data records and
// queues the rest for pion.
//
// Dial is the client side; a RebindConn lets the client move to a new local
// socket without a new handshake.
//
// Each peer's queue holds QueueLen datagrams, and when full the newest is
// dropped and counted. Links idle for IdleTimeout are closed (one read
// deadline per period, not per packet). Records that are not IPv4 packets
// are dropped and counted.
package dtls
