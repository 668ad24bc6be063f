// Package client is dstm-client: it opens TSP-SSL to the gateway with its enrolled certificate
// (SASL EXTERNAL), asks for an IPv4 tunnel, brings up a TUN device with the leased /32 and the
// pushed routes, carries IPv4 over DTLS (or the TLS stream when DTLS does not come up, or plain
// IPv4-in-IPv6 on trusted networks), renews its lease on the control connection, reconnects
// with backoff and jitter, and roams across changes of its IPv6 address.
package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/internal/dnsconf"
	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/internal/proxy"
	"github.com/dstmgw/dstm/tsp"
)

// Transport choices of the client.
const (
	TransportAuto  = "auto"  // DTLS, falling back to the TLS stream
	TransportDTLS  = "dtls"  // DTLS only
	TransportTLS   = "tls"   // TLS stream only
	TransportPlain = "plain" // IPv4-in-IPv6, protocol 4, for trusted networks
)

// DefaultPort is the TSP port.
const DefaultPort = "3653"

// Config configures a Client.
type Config struct {
	Gateway string // host or host:port of the gateway
	// Gateways are more gateways of the same cluster (host or host:port), tried in order
	// after the one in use when it cannot be reached or is too busy.
	Gateways   []string
	ServerName string // name the gateway certificate carries (default: each gateway's host)
	StateDir   string // enrolled credentials (dstm-client enroll)
	Transport  string // auto, dtls, tls or plain
	Device     string // TUN device name
	// DTLSTimeout bounds the DTLS attempt before falling back to the TLS stream.
	DTLSTimeout time.Duration
	// Backoff bounds for reconnecting.
	BackoffMin, BackoffMax time.Duration
	// KillSwitch keeps the tunnel's routes blocked (blackhole routes) after `up` ends, and
	// when it dies, until `dstm-client kill-switch off`. Without it, `up` removes any left.
	KillSwitch bool
	// ParkControl closes a DTLS session's control connection once the link carries the
	// session, and opens one (resuming the session) only to renew the lease: the gateway then
	// holds no TLS connection and no goroutine for the idle session. The cost: a gateway that
	// dies is noticed by the keepalives (three intervals), not at once by the connection.
	ParkControl bool
	// Proxy, when set, runs the tunnel in a userspace TCP/IP stack instead of a TUN device:
	// no root, no host configuration; applications reach the tunnel through these loopback
	// proxies (socks5://HOST:PORT, http://HOST:PORT), names resolved by the pushed DNS.
	Proxy []string
	// DNS says how the offer's DNS servers and domains are configured: auto (the default;
	// off with Proxy), resolved, resolv.conf or off.
	DNS string
	// ResolvConf is the resolver file (default /etc/resolv.conf): replaced in resolv.conf mode
	// and read to detect systemd-resolved.
	ResolvConf string
	// OnState is called whenever the tunnel comes up or goes down (for `status`).
	OnState func(Status)
	Logger  zerolog.Logger
	Now     func() time.Time
}

// Status is what `dstm-client status` shows.
type Status struct {
	State     string      `json:"state"` // connecting, up, down
	Gateway   string      `json:"gateway"`
	Identity  string      `json:"identity,omitempty"`
	Lease     string      `json:"lease,omitempty"`
	Server    string      `json:"server_v4,omitempty"`
	Transport string      `json:"transport,omitempty"`
	Device    string      `json:"device,omitempty"`
	Routes    []string    `json:"routes,omitempty"`
	DNS       []string    `json:"dns,omitempty"`
	Domains   []string    `json:"dns_domains,omitempty"`
	Proxy     []string    `json:"proxy,omitempty"` // rootless mode: the proxies (no device, no routes)
	Expires   time.Time   `json:"lease_expires,omitzero"`
	Since     time.Time   `json:"since,omitzero"`
	Error     string      `json:"error,omitempty"`
	PID       int         `json:"pid"`
	Offer     *tsp.Tunnel `json:"-"`
	Endpoint  netip.Addr  `json:"-"`
}

// withPort returns gw as host:port, with DefaultPort if it has none.
func withPort(gw string) string {
	if _, _, err := net.SplitHostPort(gw); err != nil {
		return net.JoinHostPort(trimBrackets(gw), DefaultPort)
	}
	return gw
}

func (c *Config) setDefaults() error {
	if c.Gateway == "" {
		return errors.New("client: the gateway address is required")
	}
	c.Gateway = withPort(c.Gateway)
	for i, g := range c.Gateways {
		if g == "" {
			return fmt.Errorf("client: gateway %d of the list is empty", i+2)
		}
		c.Gateways[i] = withPort(g)
	}
	switch c.Transport {
	case "":
		c.Transport = TransportAuto
	case TransportAuto, TransportDTLS, TransportTLS, TransportPlain:
	default:
		return fmt.Errorf("client: transport %q: want auto, dtls, tls or plain", c.Transport)
	}
	if c.Device == "" {
		c.Device = "dstmc0"
	}
	for _, p := range c.Proxy {
		if _, err := proxy.ParseURL(p); err != nil {
			return fmt.Errorf("client: %w", err)
		}
	}
	if len(c.Proxy) > 0 && c.Transport == TransportPlain {
		return errors.New("client: the plain transport needs a raw socket (root); a proxy runs without root: use auto, dtls or tls")
	}
	if len(c.Proxy) > 0 && c.KillSwitch {
		return errors.New("client: a proxy changes no route: there is nothing for a kill switch to keep blocked")
	}
	switch c.DNS {
	case "":
		c.DNS = DNSAuto
	case DNSAuto, DNSResolved, DNSResolvConf, DNSOff:
	default:
		return fmt.Errorf("client: dns %q: want auto, resolved, resolv.conf or off", c.DNS)
	}
	if runtime.GOOS != "linux" {
		// systemd-resolved and resolv.conf are Linux's; macOS and Windows keep their own.
		if c.DNS != DNSAuto && c.DNS != DNSOff {
			return fmt.Errorf("client: dns %q is built for Linux only", c.DNS)
		}
		c.DNS = DNSOff
	}
	if len(c.Proxy) > 0 {
		// The proxies resolve names by the pushed servers themselves; the host's DNS stays.
		if c.DNS != DNSAuto && c.DNS != DNSOff {
			return fmt.Errorf("client: dns %q with a proxy: a proxy changes nothing on the host", c.DNS)
		}
		c.DNS = DNSOff
	}
	if c.ResolvConf == "" {
		c.ResolvConf = dnsconf.DefaultResolvConf
	}
	if c.DTLSTimeout <= 0 {
		c.DTLSTimeout = 3 * time.Second
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = time.Second
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(time.Minute, c.BackoffMin)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.OnState == nil {
		c.OnState = func(Status) {}
	}
	return nil
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}

// Client keeps one tunnel to the gateway up.
type Client struct {
	cfg      Config
	log      zerolog.Logger
	renewer  *enroll.Renewer
	tickets  ticketCache // TLS session tickets of the current certificate
	gateways []gatewayEndpoint
	cur      atomic.Int32  // index in gateways of the one in use (or tried first next)
	upSince  atomic.Int64  // Unix ns when the last session brought the tunnel up; 0: it did not
	in       *insideState  // the TUN device and routes, kept across sessions (Run's goroutine only)
	dns      *dnsState     // the DNS configuration applied, kept across sessions (Run's goroutine only)
	proxy    *proxy.Server // the rootless mode's proxies (nil without Config.Proxy)
}

// After an established tunnel that had been up for at least stableFor goes down, the client
// reconnects within failoverJitter: short, so that a client whose gateway died is on another
// as soon as it can connect (a gateway whose host went silent first costs the connect
// timeout), and random, so that gateway's clients do not all arrive at the same instant. A
// tunnel that drops sooner (two devices of one identity replacing each other, a gateway that
// keeps losing its ownership) backs off as after any failure.
const (
	failoverJitter = 250 * time.Millisecond
	stableFor      = 2 * time.Second
)

// gatewayEndpoint is one gateway the client may use.
type gatewayEndpoint struct {
	addr       string // host:port
	serverName string // expected in its certificate
}

// endpoints lists the gateways, Gateway first, each with the name its certificate must carry.
func (c *Config) endpoints() []gatewayEndpoint {
	var out []gatewayEndpoint
	for _, g := range append([]string{c.Gateway}, c.Gateways...) {
		name := c.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(g)
		}
		out = append(out, gatewayEndpoint{addr: g, serverName: name})
	}
	return out
}

// gateway returns the gateway in use.
func (c *Client) gateway() gatewayEndpoint { return c.gateways[c.cur.Load()] }

// New checks the configuration and loads the enrolled credentials.
func New(cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r, err := enroll.NewRenewer(enroll.RenewerOptions{
		StateDir: cfg.StateDir, Gateway: cfg.Gateway, Gateways: cfg.Gateways, ServerName: cfg.ServerName,
		Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("%w (enroll first: dstm-client enroll)", err)
	}
	return &Client{cfg: cfg, log: cfg.Logger, renewer: r, gateways: cfg.endpoints()}, nil
}

// Run keeps the tunnel up until ctx ends: it renews the certificate in the background and
// reconnects with exponential backoff and jitter after any failure. It returns nil when ctx
// ends, or a permanent error (refused authentication, unsupported tunnel type).
func (c *Client) Run(ctx context.Context) error {
	go func() {
		err := c.renewer.Run(ctx)
		if ctx.Err() == nil {
			c.log.Error().Err(err).Msg("certificate renewal stopped")
		}
	}()
	defer c.closeInside()
	if len(c.cfg.Proxy) > 0 {
		stop, err := c.startProxies(ctx)
		if err != nil {
			return err
		}
		defer stop()
	} else {
		c.restoreCrashedDNS()
		defer c.restoreDNS() // before the device goes: resolved reverts its link
	}
	if len(c.cfg.Proxy) == 0 && !c.cfg.KillSwitch {
		if n, err := hostnet.ClearKillSwitch(); err != nil {
			c.log.Warn().Err(err).Msg("the kill switch of an earlier run could not be removed")
		} else if n > 0 {
			c.log.Info().Int("routes", n).Msg("kill switch of an earlier run removed")
		}
	}
	backoff := c.cfg.BackoffMin
	for {
		start := c.cfg.Now()
		c.upSince.Store(0)
		err := c.session(ctx)
		if ctx.Err() != nil {
			c.cfg.OnState(Status{State: "down", Gateway: c.gateway().addr})
			return nil
		}
		if permanent(err) {
			c.cfg.OnState(Status{State: "down", Gateway: c.gateway().addr, Error: err.Error()})
			return err
		}
		if c.cfg.Now().Sub(start) > 30*time.Second {
			backoff = c.cfg.BackoffMin // the session was up for a while: start over
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if up := c.upSince.Load(); up != 0 && c.cfg.Now().Sub(time.Unix(0, up)) >= stableFor {
			// The tunnel was up: reconnect at once (the next gateway if this one is gone),
			// and back off from the start if that fails.
			wait, backoff = rand.N(failoverJitter), c.cfg.BackoffMin/2
		}
		c.log.Warn().Err(err).Dur("retry_in", wait).Msg("tunnel down; reconnecting")
		c.cfg.OnState(Status{State: "connecting", Gateway: c.gateway().addr, Error: err.Error()})
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.BackoffMax)
	}
}

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	var se *tsp.StatusError
	if errors.As(err, &se) {
		switch se.Code {
		case tsp.StatusAuthenticationFailed, tsp.StatusUnsupportedTunnelType, tsp.StatusUnsupportedVersion:
			return true
		}
	}
	return errors.Is(err, enroll.ErrCertificateExpired)
}
