package tunnel

// Transport names as they appear in TSP offers and configuration.
const (
	Plain = "v4v6"     // IPv4-in-IPv6, IP protocol 4 (classic DSTM)
	DTLS  = "v4dtlsv6" // IPv4 in DTLS over UDP over IPv6
	TLS   = "v4tlsv6"  // IPv4 in the TSP-SSL TLS stream
	Any   = "v4anyv6"  // client lets the server offer DTLS with TLS fallback
)

// Link is the outside of one session: it carries inner IPv4 packets to the peer.
type Link interface {
	// WritePackets sends inner IPv4 packets to the peer. It must not retain pkts after returning.
	WritePackets(pkts [][]byte) error
	// Close closes the link; later writes fail with net.ErrClosed.
	Close() error
}

// Receiver takes the inner IPv4 packets a link received from its peer. It must not retain pkt.
type Receiver interface {
	ReceivePacket(pkt []byte)
}
