// Package gateway is the composition root of dstm-gateway: it owns the sockets of the one TSP
// port (TCP demultiplexed into TSP-SSL, enrollment and plain TSP; UDP shared by TSP and DTLS),
// drives tsp machines with the lease manager behind them, connects accepted sessions to the
// TEP data plane, and ties revocation, lease events, the admin API and metrics together.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/boltstore"
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/tunnel/dtls"
	"github.com/dstmgw/dstm/tunnel/plain"
	"github.com/dstmgw/dstm/tunnel/udpmux"
)

// Files and folders inside the state directory.
const (
	CADir     = "ca"
	LeaseFile = "leases.db"
)

// Gateway is one running dstm-gateway. Create it with New, start it with Run.
type Gateway struct {
	cfg     config.Config
	opts    Options
	log     zerolog.Logger
	now     func() time.Time
	version string
	started time.Time

	// Per-connection buffers of the TSP port, recycled: a plain TSP session lasts
	// milliseconds, and two 4 KiB buffers each were a fifth of its garbage.
	peekReaders sync.Pool // of *bufio.Reader (4 KiB), plain TCP connections only
	readBufs    sync.Pool // of *[]byte (4 KiB), serveStream's read buffer

	policy    *auth.PolicyHolder
	passwords atomic.Pointer[auth.DigestStore]
	ca        *certs.CA
	verifier  *auth.Verifier
	store     *boltstore.BoltStore
	leases    *lease.Manager
	metrics   *metrics.Metrics

	host    *hostnet.Host
	tunName string
	tep     *tep.TEP
	plain   *plain.Server
	dtls    *dtls.Server
	mux     *udpmux.Mux

	tlsConfig  *tls.Config
	enroll     *chanListener
	sessions   *sessions
	handshakes *semaphore
	drops      sync.Map // drop reason → *atomic.Uint64
	listenAddr []string
	tcpAddrs   []net.Addr
	udpAddrs   []net.Addr
	ready      chan struct{}
	wg         sync.WaitGroup
}

// Options carries what cmd/ decides outside the configuration file.
type Options struct {
	Version string
	Now     func() time.Time
	// Device, when set, is used as the inside TUN device instead of creating one: the gateway
	// then touches no host configuration at all (no address, routes or forwarding check).
	// Tests use it with an in-memory TUN.
	Device tun.Device
}

// New opens the gateway's state (CA, lease store) and validates that everything fits
// together. It touches no network device: Run does.
func New(cfg config.Config, log zerolog.Logger, opts Options) (*Gateway, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Gateway{
		cfg: cfg, opts: opts, log: log, now: opts.Now, version: opts.Version,
		sessions:   newSessions(),
		ready:      make(chan struct{}),
		handshakes: newSemaphore(cfg.TSP.MaxHandshakes),
		metrics:    metrics.New(),
	}
	pol, err := auth.NewPolicy(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	g.policy = auth.NewPolicyHolder(pol)
	if cfg.TSP.Passwords != "" {
		pw, err := auth.LoadDigestFile(cfg.TSP.Passwords)
		if err != nil {
			return nil, fmt.Errorf("tsp.passwords: %w", err)
		}
		g.setPasswords(pw)
	}
	if err := g.openCA(); err != nil {
		return nil, err
	}
	if err := g.openLeases(pol); err != nil {
		g.ca.Close()
		return nil, err
	}
	return g, nil
}

func (g *Gateway) openCA() error {
	ca, err := certs.Open(filepath.Join(g.cfg.StateDir, CADir), CAOptions(g.cfg, g.log, g.now))
	if err != nil {
		return fmt.Errorf("certificate authority: %w (run dstm-gateway init first)", err)
	}
	g.ca = ca
	g.verifier, err = auth.NewVerifier(auth.VerifierConfig{
		Roots: []*x509.Certificate{ca.Root()}, Intermediates: []*x509.Certificate{ca.Intermediate()},
		Revocations: ca, Policy: g.policy, Now: g.now,
	})
	if err != nil {
		ca.Close()
		return err
	}
	g.tlsConfig = g.newTLSConfig()
	return nil
}

// CAOptions maps the configuration onto the CA's options (also used by `init`).
func CAOptions(cfg config.Config, log zerolog.Logger, now func() time.Time) certs.Options {
	return certs.Options{
		DNSNames:     cfg.CA.ServerNames,
		IPAddresses:  cfg.CA.ServerIPs,
		LeafLifetime: cfg.CA.ClientCertLifetime.D(),
		Now:          now,
		Logger:       log,
	}
}

func (g *Gateway) openLeases(pol *auth.Policy) error {
	st, err := boltstore.OpenBolt(filepath.Join(g.cfg.StateDir, LeaseFile), boltstore.BoltOptions{})
	if err != nil {
		return fmt.Errorf("lease store: %w", err)
	}
	m, err := lease.New(LeaseConfig(g.cfg, pol, g.now), st)
	if err != nil {
		st.Close()
		return fmt.Errorf("leases: %w", err)
	}
	g.store, g.leases = st, m
	return g.holdOrphans()
}

// holdOrphans turns the offered and active leases of a previous run (after a crash or kill -9
// their sessions are gone) into held ones, so their owners get them back when they reconnect.
func (g *Gateway) holdOrphans() error {
	n, err := g.leases.ReleaseAll(context.Background(), lease.ReasonRestart)
	if err != nil {
		return fmt.Errorf("leases: hold the leases of a previous run: %w", err)
	}
	if n > 0 {
		g.log.Info().Int("leases", n).Msg("leases of the previous run are held for their identities")
	}
	return nil
}

// LeaseConfig maps the configuration and policy onto the lease manager's config.
func LeaseConfig(cfg config.Config, pol *auth.Policy, now func() time.Time) lease.Config {
	lc := lease.Config{
		OfferTimeout: cfg.Leases.OfferTimeout.D(),
		Lifetime:     cfg.Leases.Lifetime.D(),
		HoldTime:     cfg.Leases.HoldTime.D(),
		MaxSessions:  cfg.Leases.MaxSessions,
		Now:          now,
	}
	if cfg.Leases.OnLimit == "refuse" {
		lc.OnLimit = lease.Refuse
	}
	for _, p := range cfg.Pools {
		pc := lease.PoolConfig{Name: p.Name, Prefixes: p.Prefixes, Exclude: p.Exclude, ExcludeNetworkBroadcast: true}
		if p.ExcludeNetworkBroadcast != nil {
			pc.ExcludeNetworkBroadcast = *p.ExcludeNetworkBroadcast
		}
		for _, r := range p.Ranges {
			pc.Ranges = append(pc.Ranges, lease.Range{First: r.First, Last: r.Last})
		}
		// The gateway's own inner address is never leased.
		pc.Exclude = append(pc.Exclude, netip.PrefixFrom(cfg.TEP.InnerV4, 32))
		lc.Pools = append(lc.Pools, pc)
	}
	for id, a := range pol.Reservations() {
		lc.Reservations = append(lc.Reservations, lease.Reservation{Identity: id, Addr: a})
	}
	return lc
}

// Close releases the state files. Run closes everything else it opened.
func (g *Gateway) Close() error {
	return errors.Join(g.store.Close(), g.ca.Close())
}

// Ready is closed once Run has opened every listener.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// ListenAddrs returns the bound TCP and UDP addresses (valid after Ready).
func (g *Gateway) ListenAddrs() (tcp, udp []net.Addr) { return g.tcpAddrs, g.udpAddrs }

// setPasswords swaps the PLAIN/DIGEST-MD5 credential store (nil: none).
func (g *Gateway) setPasswords(pw *auth.DigestStore) { g.passwords.Store(pw) }

// outerV6 is the gateway's outer IPv6 endpoint named in offers.
func (g *Gateway) outerV6() netip.Addr {
	if g.cfg.TEP.IPv6.IsValid() {
		return g.cfg.TEP.IPv6
	}
	for _, a := range g.cfg.Listen.Addresses {
		if a.Addr().Is6() && !a.Addr().IsUnspecified() {
			return a.Addr()
		}
	}
	return netip.IPv6Loopback()
}

// port is the UDP port announced for the DTLS data channel.
func (g *Gateway) port() uint16 {
	if len(g.udpAddrs) > 0 {
		return uint16(g.udpAddrs[0].(*net.UDPAddr).Port)
	}
	return g.cfg.Listen.Addresses[0].Port()
}

// countDrop counts a control-plane drop by reason; exported with the data-plane drops.
func (g *Gateway) countDrop(reason string) {
	v, _ := g.drops.LoadOrStore(reason, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// endSession ends a session everywhere: control channel, data plane, lease, tables.
func (g *Gateway) endSession(s *session, why lease.Reason) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	closeCtl := s.closeCtl
	s.mu.Unlock()
	g.detachData(s, why)
	g.sessions.remove(s)
	if closeCtl != nil {
		closeCtl()
	}
	s.log.Debug().Str("reason", string(why)).Msg("session ended")
}
