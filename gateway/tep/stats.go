package tep

import (
	"sync/atomic"

	"github.com/dstmgw/dstm/tunnel"
)

// DropReason says why the TEP dropped a packet.
type DropReason int

// Drop reasons. Their String values are the metric label values.
const (
	DropNoSession      DropReason = iota // destination (inside) or session (outside) gone
	DropSpoofedSource                    // inner source is not the session's lease
	DropQueueFull                        // session queue full: the newest packet is dropped
	DropMalformed                        // not a valid IPv4 packet
	DropTooBig                           // larger than the MTU with DF set (ICMP sent)
	DropLinkError                        // the link refused a batch, or no link is attached
	DropTUNError                         // the TUN device refused a write
	DropNotIPv4                          // an IPv6 packet instead of IPv4 (e.g. a TUN device's router solicitations)
	DropDeniedOutbound                   // from the client: no access rule allows it and it answers no tracked flow
	DropDeniedInbound                    // to the client: no access rule allows it and it answers no tracked flow
	numDropReasons
)

var dropNames = [numDropReasons]string{"no_session", "spoofed_source", "queue_full", "malformed", "too_big", "link_error", "tun_error", "not_ipv4", "denied_outbound", "denied_inbound"}

// String returns the reason's metric label.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return "unknown"
	}
	return dropNames[r]
}

// transport indices for per-transport counters.
const (
	trPlain = iota
	trDTLS
	trTLS
	trOther
	numTransports
)

var transportNames = [numTransports]string{tunnel.Plain, tunnel.DTLS, tunnel.TLS, "other"}

func transportIndex(name string) int {
	for i, n := range transportNames[:trOther] {
		if n == name {
			return i
		}
	}
	return trOther
}

// Counter is a packet and byte count.
type Counter struct {
	Packets, Bytes uint64
}

// Traffic counts one transport's packets per direction: In is from the
// tunnel to the TUN device, Out from the TUN device into the tunnel.
type Traffic struct {
	In, Out Counter
}

// Stats is a snapshot of the TEP's counters.
type Stats struct {
	Sessions   int
	Transports map[string]Traffic // by transport name; "other" for unknown names
	Drops      map[string]uint64  // by DropReason.String()
	ICMPSent   uint64             // ICMP errors and TCP resets generated (both directions)
	// Denied counts the packets access rules denied, by access block (its
	// field path, e.g. policy.groups["eng"].access) and direction.
	Denied             []Denied
	ConntrackEvictions uint64 // flows evicted from full connection tables
}

// Denied is the count of packets one access block denied in one direction.
type Denied struct {
	Rule      string // the access block's field path
	Direction string // "outbound" (from the client) or "inbound" (to the client)
	Packets   uint64
}

type counter struct{ packets, bytes atomic.Uint64 }

func (c *counter) add(packets, bytes int) {
	c.packets.Add(uint64(packets))
	c.bytes.Add(uint64(bytes))
}

func (c *counter) load() Counter { return Counter{c.packets.Load(), c.bytes.Load()} }

func (c Counter) sub(o Counter) Counter { return Counter{c.Packets - o.Packets, c.Bytes - o.Bytes} }

func (c Counter) plus(o Counter) Counter { return Counter{c.Packets + o.Packets, c.Bytes + o.Bytes} }

func (t Traffic) plus(o Traffic) Traffic { return Traffic{t.In.plus(o.In), t.Out.plus(o.Out)} }
