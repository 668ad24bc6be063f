// Package udpmux serves the gateway's one UDP port (default 3653) for two
// protocols at once: TSP over UDP (RFC 5572 "reliable UDP" framing) and DTLS.
// A Mux runs one reader goroutine per socket, reads datagrams in batches and
// dispatches each by its first byte:
//
//	0xF0–0xFF  TSP (the high nibble of the TSP UDP header is 0xF)
//	20–25      DTLS (change_cipher_spec, alert, handshake, application_data,
//	           heartbeat, tls12_cid)
//	0x08       dstm data records (tunnel/record), to the DTLS handler too
//	other      dropped and counted (Stats.DroppedJunk)
//
// Handlers must copy what they keep of a datagram, and may change it in place (the DTLS
// handler decrypts data records there). A BatchHandler (the DTLS server) takes the
// datagrams of one recvmmsg as a batch, valid until its EndBatch, so that a session's
// packets reach the TUN device in one write. Replies go out through Mux.WriteTo, which
// picks the socket by address family; Mux.WriteBatch and BatchWriter send several
// datagrams per sendmmsg.
package udpmux
