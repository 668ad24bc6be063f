package control

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/tunnel"
)

// Config is what a Server is built with; Gateway is read only.
type Config struct {
	Gateway config.Config
	Leases  *lease.Manager
	TEP     *tep.TEP
	// Plain is the v4v6 transport (nil: not offered); DTLS says whether the DTLS data
	// channel is served (its server binds links with BindDTLS) and DataPort its UDP port.
	Plain     PlainTransport
	DTLS      bool
	DataPort  uint16
	Policy    *auth.PolicyHolder
	Passwords func() *auth.DigestStore                // PLAIN/DIGEST-MD5 credentials (nil: none)
	WriteUDP  func(b []byte, to netip.AddrPort) error // sends from the UDP port
	TLS       *tls.Config                             // see NewTLSConfig
	// MaxConns bounds the open TCP connections of every kind (0: no bound).
	MaxConns int
	Enroll   func(net.Conn) // takes (and owns) the TLS connections of ALPN http/1.1
	Metrics  *metrics.Metrics
	Logger   zerolog.Logger
	Now      func() time.Time
}

// PlainTransport is the v4v6 transport as the control plane uses it: one link per client
// IPv6 endpoint (*plain.Server).
type PlainTransport interface {
	Register(endpoint netip.Addr, r tunnel.Receiver) (tunnel.Link, error)
}

// Server is the TSP control plane of one gateway. Create it with New.
type Server struct {
	cfg Config
	gw  config.Config // cfg.Gateway
	log zerolog.Logger
	now func() time.Time
	udp *udpServer
	tcp *tcpFront

	offers         *offers
	eventBuffer    int           // lease-event subscription buffer (leaseEventBuffer; tests set it lower)
	reconcileEvery time.Duration // (reconcileEvery; tests set it higher)
	sessions       *table
	quiet          *sampledLog // lines about unauthenticated sessions
	readBufs       sync.Pool   // of *[]byte (4 KiB), serveStream's read buffer, reused across connections

	drops sync.Map // drop reason → *atomic.Uint64
}

// New returns a Server; it starts nothing (see ServeTCP, UDP and FollowLeases).
func New(cfg Config) (*Server, error) {
	if cfg.Leases == nil || cfg.TEP == nil || cfg.Policy == nil || cfg.TLS == nil {
		return nil, errors.New("control: leases, TEP, policy and TLS configuration are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Passwords == nil {
		cfg.Passwords = func() *auth.DigestStore { return nil }
	}
	if cfg.WriteUDP == nil {
		cfg.WriteUDP = func([]byte, netip.AddrPort) error { return net.ErrClosed }
	}
	if cfg.Enroll == nil {
		cfg.Enroll = func(c net.Conn) { c.Close() }
	}
	s := &Server{
		cfg: cfg, gw: cfg.Gateway, log: cfg.Logger, now: cfg.Now,
		sessions: newTable(), eventBuffer: leaseEventBuffer, reconcileEvery: reconcileEvery,
	}
	s.offers = &offers{
		gw: cfg.Gateway, policy: cfg.Policy, passwords: cfg.Passwords,
		plain: cfg.Plain != nil, dtls: cfg.DTLS, port: cfg.DataPort,
	}
	s.quiet = newSampledLog(s.log, s.now)
	s.udp = newUDPServer(s)
	s.tcp = newTCPFront(s)
	return s, nil
}

func (s *Server) countDrop(reason string) {
	v, _ := s.drops.LoadOrStore(reason, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// Drops adds the control plane's drop counters to m, by reason, lease events dropped included.
func (s *Server) Drops(m map[string]uint64) {
	m["lease_events_dropped"] += s.cfg.Leases.DroppedEvents()
	s.drops.Range(func(k, v any) bool {
		m[k.(string)] += v.(*atomic.Uint64).Load()
		return true
	})
}

// EndAll ends every session: the gateway stops, or lost the ownership of its leases.
func (s *Server) EndAll(why lease.Reason) {
	for _, ss := range s.sessions.all() {
		s.end(ss, why)
	}
}

// Wait waits for the TCP connection workers, which end with the context given to ServeTCP.
func (s *Server) Wait() { s.tcp.wg.Wait() }
