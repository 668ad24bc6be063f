// Package gateway is the composition root of dstm-gateway: it opens the state (CA, lease
// store), sets up the host (TUN device, routes) and the sockets of the one TSP port, and wires
// the control plane (package control), the TEP, the transports, revocation, the admin API and
// metrics together. It owns no protocol logic of its own.
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
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/bgp"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/console"
	"github.com/dstmgw/dstm/gateway/control"
	"github.com/dstmgw/dstm/gateway/events"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/boltstore"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/gateway/split"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/internal/park"
	"github.com/dstmgw/dstm/sso"
	"github.com/dstmgw/dstm/tunnel/dtls"
	"github.com/dstmgw/dstm/tunnel/plain"
	"github.com/dstmgw/dstm/tunnel/udpmux"
)

// Files and folders inside the state directory.
const (
	CADir     = "ca"
	LeaseFile = "leases.db"
)

// lockTimeout is how long New waits for state files another process holds: a running
// gateway holds them all the time, so waiting longer would only delay the error.
const lockTimeout = 200 * time.Millisecond

// ErrStateLocked is matched (errors.Is) by New's error when another process, most likely a
// running dstm-gateway, holds the state directory's files.
var ErrStateLocked = errors.New("lock held")

// stateError names the state directory in use by another gateway, or no CA yet; anything
// else keeps the operating system's error.
func stateError(stateDir, what string, err error) error {
	switch {
	case errors.Is(err, certs.ErrLocked), errors.Is(err, boltstore.ErrLocked):
		return fmt.Errorf("another dstm-gateway is running with state directory %s (%w)", stateDir, ErrStateLocked)
	case errors.Is(err, certs.ErrNotInitialized):
		return fmt.Errorf("%w (run dstm-gateway init first)", err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Gateway is one running dstm-gateway. Create it with New, start it with Run.
type Gateway struct {
	cfg     config.Config // written by New and Reload only
	opts    Options
	log     zerolog.Logger
	now     func() time.Time
	version string
	started time.Time

	policy    *auth.PolicyHolder
	passwords atomic.Pointer[auth.DigestStore]
	ca        *certs.CA
	signIn    atomic.Pointer[sso.Verifier] // the sso section's verifier; nil: no single sign-on
	verifier  *auth.Verifier
	tlsConfig *tls.Config
	store     leaseStore
	etcd      *etcdstore.Store // nil in single-node mode
	node      string           // this gateway's name in a cluster ("" in single-node mode)
	leases    *lease.Manager
	metrics   *metrics.Metrics
	events    *events.Ring     // recent events, for the console
	seen      *events.LastSeen // when each certificate last carried a session
	// consoleSecret is the console's OIDC client secret (console.client_secret_file).
	consoleSecret string
	// memLimitAtStart is the soft memory limit the process started with (GOMEMLIMIT), in
	// force when memory_limit is not set.
	memLimitAtStart int64

	// Set up by Run, in this order, and not changed afterwards.
	host       *hostnet.Host // nil with Options.Device
	tunName    string
	tep        *tep.TEP
	plain      *plain.Server // nil unless tep.plain_transport
	ctl        *control.Server
	park       *park.Poller     // idle TCP and TLS sessions wait here; nil if it cannot start
	dtls       *dtls.Server     // nil without UDP
	bgp        *bgp.Speaker     // nil without bgp:
	teps       *split.Directory // a control node without the tep role: its TEP nodes
	binder     *split.Binder    // a TEP node without the control role: its sessions
	mux        *udpmux.Mux      // nil without UDP
	enroll     *chanListener
	maxConns   int // TCP connections open at once, of every kind
	listenAddr []string
	tcpAddrs   []net.Addr
	udpAddrs   []net.Addr
	ready      chan struct{} // closed once all of the above is set

	// Set up by Run with a console section (a control node): the web console.
	console *console.Server
}

// Options carries what cmd/ decides outside the configuration file.
type Options struct {
	Version string
	Now     func() time.Time
	// Device, when set, is the inside TUN device (tests use an in-memory one); the gateway
	// then touches no host configuration at all.
	Device tun.Device
	// MaxConns, when set, bounds the TCP connections instead of the file descriptor limit.
	MaxConns int
}

// New opens the gateway's state (CA, lease store) and validates that everything fits
// together. It touches no network device: Run does.
func New(cfg config.Config, log zerolog.Logger, opts Options) (*Gateway, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Gateway{
		cfg: cfg, opts: opts, log: log, now: opts.Now, version: opts.Version,
		ready:   make(chan struct{}),
		metrics: metrics.New(),
		events:  events.NewRing(eventsPerKind),
		seen:    events.NewLastSeen(seenSerials),
		// What a negative argument returns: the limit in force, unchanged.
		memLimitAtStart: debug.SetMemoryLimit(-1),
	}
	pol, err := auth.NewPolicy(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	g.policy = auth.NewPolicyHolder(pol)
	if err := g.readConsoleSecret(); err != nil {
		return nil, err
	}
	if cfg.TSP.Passwords != "" {
		pw, err := auth.LoadDigestFile(cfg.TSP.Passwords)
		if err != nil {
			return nil, fmt.Errorf("tsp.passwords: %w", err)
		}
		g.passwords.Store(pw)
	}
	// In cluster mode etcd comes first: the CA keeps its state there too.
	if e := cfg.Store.Etcd; e != nil {
		es, err := g.openEtcd(e)
		if err != nil {
			return nil, err
		}
		g.etcd = es
	}
	if err := g.openCA(); err != nil {
		g.closeEtcd()
		return nil, err
	}
	if !cfg.Has(config.RoleControl) { // a TEP node: the control nodes keep the leases
		return g, nil
	}
	if err := g.openLeases(pol); err != nil {
		g.ca.Close()
		g.closeEtcd()
		return nil, err
	}
	return g, nil
}

func (g *Gateway) openCA() error {
	opts := CAOptions(g.cfg, g.log, g.now)
	opts.LockTimeout = lockTimeout
	if g.etcd != nil {
		e := g.cfg.Store.Etcd
		opts.Shared = &certs.Shared{Client: g.etcd.Client(), Prefix: e.Prefix, Timeout: e.RequestTimeout.D()}
		if opts.Shared.Prefix == "" {
			opts.Shared.Prefix = etcdstore.DefaultPrefix
		}
	}
	ca, err := certs.Open(filepath.Join(g.cfg.StateDir, CADir), opts)
	if err != nil {
		return stateError(g.cfg.StateDir, "certificate authority", err)
	}
	g.ca = ca
	signIn, err := g.newSignIn(g.cfg.SSO)
	if err != nil {
		ca.Close()
		return err
	}
	g.applySignIn(signIn)
	g.verifier, err = auth.NewVerifier(auth.VerifierConfig{
		Roots: []*x509.Certificate{ca.Root()}, Intermediates: []*x509.Certificate{ca.Intermediate()},
		Revocations: ca, Policy: g.policy, Now: g.now,
	})
	if err != nil {
		ca.Close()
		return err
	}
	g.tlsConfig = control.NewTLSConfig(ca.GetCertificate, ca.RootPool(), g.verifier)
	if err := g.setTicketKeys(); err != nil {
		ca.Close()
		return err
	}
	return nil
}

// CAOptions maps the configuration onto the CA's options (also used by `init`).
func CAOptions(cfg config.Config, log zerolog.Logger, now func() time.Time) certs.Options {
	ips := cfg.CA.ServerIPs
	// A node with the tep role serves DTLS at tep.ipv6, the address offers name: clients
	// accept a certificate that names it (a TEP node apart from the control node).
	if cfg.Has(config.RoleTEP) && cfg.TEP.IPv6.IsValid() && !slices.Contains(ips, cfg.TEP.IPv6) {
		ips = append(slices.Clone(ips), cfg.TEP.IPv6)
	}
	return certs.Options{
		DNSNames:     cfg.CA.ServerNames,
		IPAddresses:  ips,
		LeafLifetime: cfg.CA.ClientCertLifetime.D(),
		Now:          now,
		Logger:       log,
	}
}

// leaseStore is a lease.Store the gateway closes when it stops.
type leaseStore interface {
	lease.Store
	Close() error
}

func (g *Gateway) openLeases(pol *auth.Policy) error {
	var st leaseStore
	if g.etcd != nil {
		st = g.etcd
	} else {
		bs, err := boltstore.OpenBolt(filepath.Join(g.cfg.StateDir, LeaseFile), boltstore.BoltOptions{Timeout: lockTimeout})
		if err != nil {
			return stateError(g.cfg.StateDir, "leases", err) // err names the lease store
		}
		st = bs
	}
	lc := LeaseConfig(g.cfg, pol, g.now)
	lc.Owner = g.node
	m, err := lease.New(lc, st)
	if err != nil {
		if g.etcd == nil {
			st.Close() // the caller closes etcd
		}
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

// LeaseConfig maps the configuration and policy onto the lease manager's config, which
// accepts whatever config.Validate passed.
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
	var err error
	if g.store != nil {
		err = g.store.Close()
	} else {
		g.closeEtcd()
	}
	return errors.Join(err, g.ca.Close())
}

// Ready is closed once Run has opened every listener.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// ListenAddrs returns the bound TCP and UDP addresses (valid after Ready).
func (g *Gateway) ListenAddrs() (tcp, udp []net.Addr) { return g.tcpAddrs, g.udpAddrs }

// newSignIn makes the verifier of an sso section (nil for none). The
// provider is not contacted: a provider that is down does not stop the
// gateway.
func (g *Gateway) newSignIn(cfg *sso.Config) (*sso.Verifier, error) {
	if cfg == nil {
		return nil, nil
	}
	v, err := sso.New(*cfg, sso.Options{Now: g.now})
	if err != nil {
		return nil, fmt.Errorf("sso: %w", err)
	}
	return v, nil
}

// applySignIn enables enrollment by single sign-on with v (nil disables it).
func (g *Gateway) applySignIn(v *sso.Verifier) {
	if v == nil {
		g.ca.SetSignIn(nil)
	} else {
		g.ca.SetSignIn(v)
	}
	g.signIn.Store(v)
}
