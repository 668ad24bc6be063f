package tsp

import (
	"context"
	"errors"
	"time"

	"github.com/dstmgw/dstm/tsp/sasl"
)

// Transport is the carrier of a TSP session. TCP and TLS share stream
// framing; UDP uses the 8-byte header and answers every datagram.
type Transport uint8

// Transports.
const (
	TransportTCP Transport = iota + 1
	TransportTLS
	TransportUDP
)

// String returns "tcp", "tls" or "udp".
func (t Transport) String() string {
	switch t {
	case TransportTCP:
		return "tcp"
	case TransportTLS:
		return "tls"
	case TransportUDP:
		return "udp"
	}
	return "invalid"
}

func (t Transport) valid() bool { return t >= TransportTCP && t <= TransportUDP }

// DigestStatusPause separates the DIGEST-MD5 rspauth line from the "200
// Success" after it on a stream: gogoc reads each with one recv() and hangs
// if both arrive in one segment.
const DigestStatusPause = 300 * time.Millisecond

// Reply is one message to send to the peer.
type Reply struct {
	// Payload follows the echoed header on UDP, where it may be empty (a
	// header-only datagram); on a stream it is never empty.
	Payload []byte
	// Separate asks the writer to flush the previous reply and pause
	// DigestStatusPause first, so that the two never share a TCP segment.
	Separate bool
}

// Identity is who authenticated a session.
type Identity struct {
	// Name is the SASL user name, the certificate identity (EXTERNAL) or
	// the gateway's ServerConfig.AnonymousName.
	Name      string
	Mechanism sasl.Mechanism
	// Groups are the policy groups of an EXTERNAL identity's certificate.
	Groups []string
}

// Backend is the gateway's side of one session's machine. A *StatusError
// sends its code with the fixed phrase; any other error sends 310 without
// its text.
type Backend interface {
	// Create answers a create request (also a renewal on an established
	// session) with an offer. The machine takes ownership of the offer.
	Create(ctx context.Context, id Identity, req *Tunnel) (*Tunnel, error)
	// Accept makes the offer active. data is the data transport the client
	// chose: the offer's type for v4v6, v4dtlsv6 or v4tlsv6 otherwise.
	Accept(ctx context.Context, id Identity, offer *Tunnel, data TunnelType) error
	// Delete releases the session's tunnel (client delete or reject).
	Delete(ctx context.Context, id Identity) error
}

// ErrClosed is returned by Step once the machine is closed.
var ErrClosed = errors.New("tsp: session closed")

// versionSupported accepts 2.0.0 to 2.0.2 (gogoc falls back through them on 302).
func versionSupported(v string) bool {
	return v == "2.0.0" || v == "2.0.1" || v == "2.0.2"
}
