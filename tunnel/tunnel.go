package tunnel

import "net/netip"

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
	// Done is closed when the link has ended: closed locally, by the peer, or idle.
	Done() <-chan struct{}
	// Transport is the link's transport name: Plain, DTLS or TLS.
	Transport() string
	// Endpoint is the peer's current outer address (port 0 for raw IP).
	Endpoint() netip.AddrPort
}

// DirectWriter is implemented by links whose WritePackets does not wait on their one peer:
// datagram links that send on a socket every session shares. While WritesDirect reports true,
// a TEP may write a lone packet to the link from its TUN reader instead of handing it to the
// session's writer goroutine (one goroutine hand-off less per round trip); a link that can
// wait on its peer (a TCP stream) must not report true, or it would stall every session.
type DirectWriter interface {
	WritesDirect() bool
}

// Receiver takes the inner IPv4 packets a link received from its peer, in batches of
// consecutive packets. It must not retain pkts or the packets after returning.
type Receiver interface {
	ReceivePackets(pkts [][]byte)
}
