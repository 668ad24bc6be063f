package control

import (
	"context"
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
	"github.com/dstmgw/dstm/gateway/events"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/gateway/split"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/internal/park"
	"github.com/dstmgw/dstm/tunnel"
)

// Config is what a Server is built with; Gateway is read only.
type Config struct {
	Gateway config.Config
	Leases  *lease.Manager
	// TEP is this node's TEP; nil on a control node whose TEPs run elsewhere (Remote).
	TEP *tep.TEP
	// Remote, on a control node without a TEP, binds each session to a TEP node.
	Remote Remote
	// Plain is the v4v6 transport (nil: not offered); DTLS says whether the DTLS data
	// channel is served (its server binds links with BindDTLS) and DataPort its UDP port.
	Plain     PlainTransport
	DTLS      bool
	DataPort  uint16
	Policy    *auth.PolicyHolder
	Passwords func() *auth.DigestStore                // PLAIN/DIGEST-MD5 credentials (nil: none)
	WriteUDP  func(b []byte, to netip.AddrPort) error // sends from the UDP port
	TLS       *tls.Config                             // see NewTLSConfig
	// Park, when set, waits for the idle established TCP and TLS sessions, whose readers
	// then hold no goroutine (internal/park); the caller closes it after Wait.
	Park *park.Poller
	// MaxConns bounds the open TCP connections of every kind (0: no bound).
	MaxConns int
	Enroll   func(net.Conn) // takes (and owns) the TLS connections of ALPN http/1.1
	Metrics  *metrics.Metrics
	// Events receives what the web console shows (sessions established and ended, leases
	// lost, failed handshakes); nil: nothing. It must not block.
	Events func(events.Event)
	Logger zerolog.Logger
	Now    func() time.Time
}

// Remote is the TEP directory of a control node whose TEPs run on other nodes
// (*split.Directory).
type Remote interface {
	Pick(need split.Need, prefer, key string) (split.TEP, error)
	Get(name string) (split.TEP, bool)
	Bind(ctx context.Context, b split.Binding, prev *split.Binding) error
	Unbind(ctx context.Context, b split.Binding) error
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
	if cfg.Leases == nil || (cfg.TEP == nil) == (cfg.Remote == nil) || cfg.Policy == nil || cfg.TLS == nil {
		return nil, errors.New("control: leases, a TEP or a remote TEP directory (one of them), policy and TLS configuration are required")
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
	if cfg.Events == nil {
		cfg.Events = func(events.Event) {}
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
	if cfg.Remote != nil { // served by the TEP nodes; Create fails when none does
		s.offers.plain, s.offers.dtls, s.offers.remote = true, true, true
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

// ReasonTEPLost ends the sessions of a TEP node that left (control node without a TEP).
const ReasonTEPLost lease.Reason = "tep lost"

// endParallel bounds the sessions TEPLost ends at once (each releases its lease in the store).
const endParallel = 16

// TEPLost ends, in the background, every session bound to the TEP node name, which left the
// cluster: the clients come back (same address, held for them) and are bound to another.
func (s *Server) TEPLost(name string) {
	var gone []*session
	for _, ss := range s.sessions.all() {
		if ss.binding().TEP == name {
			gone = append(gone, ss)
		}
	}
	if len(gone) == 0 {
		return
	}
	s.log.Warn().Str("tep", name).Int("sessions", len(gone)).Str("reason", string(ReasonTEPLost)).
		Msg("TEP left: its sessions end; their clients come back through another TEP")
	go func() {
		sem := make(chan struct{}, endParallel)
		for _, ss := range gone {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				s.end(ss, ReasonTEPLost)
			}()
		}
	}()
}

// Wait waits for the TCP connection workers, which end with the context given to ServeTCP.
func (s *Server) Wait() { s.tcp.wg.Wait() }
