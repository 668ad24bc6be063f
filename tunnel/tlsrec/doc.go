// Package tlsrec takes the record layer of a TSP-SSL connection over from crypto/tls once the
// handshake is done, so that a long-lived, mostly idle control connection or TLS stream keeps
// only its record keys instead of crypto/tls's connection (its buffers, the handshake
// messages and the peer's parsed certificate chain; docs/reliability.md has the figures).
//
// Both sides opt in by ALPN (ALPN, "tsp/2-rec1"): a client offers it before "tsp/2", and a
// gateway that speaks it selects it. After the TLS handshake each side sends one TLS
// application-data record holding Marker and reads the peer's; from the byte after the peer's
// marker record on, the TCP connection carries stream records:
//
//	length (2 bytes, big endian) | data record (tunnel/record: header, AEAD(content), tag)
//
// A stream record is a data record of tunnel/record (session id 0) with keys exported from the
// TLS session (RFC 5705/8446 §7.5, label ExporterLabel), one secret per direction, AES-256-GCM
// or ChaCha20-Poly1305 as the TLS cipher suite was. Its counter must be the one after the last
// (TCP delivers in order, so anything else is an attack and ends the connection); keys change
// every record.EpochPackets records. The content is the stream's bytes, at most MaxPlaintext a
// record; an empty content is the close record (close_notify): the writer has ended the
// stream. A connection that ends without one was truncated (io.ErrUnexpectedEOF).
//
// Reading stops at TLS record boundaries until the switch (boundaryConn), so crypto/tls never
// buffers a byte of the stream records that follow the marker. Session tickets and other
// post-handshake messages of the server come before its marker and are read by crypto/tls.
package tlsrec
