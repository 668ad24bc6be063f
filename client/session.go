package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tsp/sasl"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/dtls"
	"github.com/dstmgw/dstm/tunnel/plain"
	"github.com/dstmgw/dstm/tunnel/stream"
	"github.com/dstmgw/dstm/tunnel/tlsrec"
	"github.com/dstmgw/dstm/tunnel/udpmux"
)

// control is the TSP-SSL connection and its client machine.
type control struct {
	conn net.Conn
	m    *tsp.Client
	sp   *tsp.Splitter
	buf  []byte

	msgs chan []byte // TSP messages received after the offer

	wmu    sync.Mutex
	stream *stream.Link // set once the connection carries the TLS data stream
}

// send writes replies: as TSP messages, or as control frames in stream mode.
func (c *control) send(replies []tsp.Reply) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, r := range replies {
		if len(r.Payload) == 0 {
			continue
		}
		var err error
		if c.stream != nil {
			err = c.stream.WriteControl(r.Payload)
		} else {
			_, err = c.conn.Write(r.Payload)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ctlErr is the error that ended the reading of a control connection.
type ctlErr struct {
	ctl *control
	err error
}

// readLoop hands the server's messages to c.msgs until the connection fails, then reports
// it on failed; it returns once stop is closed, never outliving the session.
func (c *control) readLoop(stop <-chan struct{}, failed chan<- ctlErr) {
	for {
		msg, err := c.next()
		if err != nil {
			select {
			case failed <- ctlErr{c, err}:
			case <-stop:
			}
			return
		}
		select {
		case c.msgs <- msg:
		case <-stop:
			return
		}
	}
}

func (c *control) next() ([]byte, error) {
	for {
		msg, ok, err := c.sp.Next()
		if err != nil || ok {
			return msg, err
		}
		n, err := c.conn.Read(c.buf)
		if n > 0 {
			_, _ = c.sp.Write(c.buf[:n])
			continue
		}
		if err != nil {
			return nil, err
		}
	}
}

// negotiate runs the TSP exchange up to the offer.
func (c *control) negotiate() (*tsp.Tunnel, error) {
	replies, err := c.m.Start()
	if err != nil {
		return nil, err
	}
	for c.m.Offer() == nil {
		if err := c.send(replies); err != nil {
			return nil, err
		}
		msg, err := c.next()
		if err != nil {
			return nil, fmt.Errorf("TSP: %w", err)
		}
		if replies, err = c.m.Step(msg); err != nil {
			return nil, err
		}
	}
	return c.m.Offer(), c.send(replies)
}

// request is the create request: a new tunnel, or the resumption of the DTLS session whose
// data element is resume.
func (c *Client) request(local netip.Addr, resume *tsp.DataChannel) *tsp.Tunnel {
	t := &tsp.Tunnel{Type: requestType(c.cfg.Transport), Client: &tsp.ClientInfo{IPv6: local}}
	if resume != nil {
		t.Type = tsp.TypeV4DTLSV6
		t.Data = &tsp.DataChannel{Token: resume.Token, Port: resume.Port, Transports: []tsp.TunnelType{tsp.TypeV4DTLSV6}}
	}
	return t
}

func requestType(transport string) tsp.TunnelType {
	switch transport {
	case TransportDTLS:
		return tsp.TypeV4DTLSV6
	case TransportTLS:
		return tsp.TypeV4TLSV6
	case TransportPlain:
		return tsp.TypeV4V6
	}
	return tsp.TypeV4AnyV6
}

// dial opens TSP-SSL to the gateway and negotiates an offer. With resume (the data element of
// the current offer), the create asks the gateway to continue that session on this connection.
//
// With several gateways (Config.Gateways) it starts with the one in use and goes on to the
// next when one cannot be reached, fails the handshake or refuses for a reason another
// gateway may not have (TSP 530, too busy: a gateway cut off from its cluster says so). A
// session to resume lives on its gateway only: that one alone is tried.
func (c *Client) dial(ctx context.Context, resume *tsp.DataChannel) (*control, *tsp.Tunnel, netip.Addr, error) {
	first := int(c.cur.Load())
	tries := len(c.gateways)
	if resume != nil {
		tries = 1
	}
	var errs []error
	for i := range tries {
		gi := (first + i) % len(c.gateways)
		ctl, offer, local, err := c.dialOne(ctx, c.gateways[gi], resume)
		if err == nil {
			if gi != first {
				c.log.Warn().Str("gateway", c.gateways[gi].addr).Str("from", c.gateways[first].addr).
					Msg("gateway changed")
			}
			c.cur.Store(int32(gi))
			return ctl, offer, local, nil
		}
		if permanent(err) || ctx.Err() != nil {
			return nil, nil, netip.Addr{}, err
		}
		errs = append(errs, err)
	}
	return nil, nil, netip.Addr{}, errors.Join(errs...)
}

// Bounds of one gateway's connection and TLS handshake: shorter with several gateways, so
// that one that went silent (host down, no RST) does not hold the failover back for long.
const (
	dialTimeout        = 15 * time.Second
	clusterDialTimeout = 5 * time.Second
)

func (c *Client) dialOne(ctx context.Context, gw gatewayEndpoint, resume *tsp.DataChannel) (*control, *tsp.Tunnel, netip.Addr, error) {
	timeout := dialTimeout
	if len(c.gateways) > 1 {
		timeout = clusterDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", gw.addr)
	if err != nil {
		return nil, nil, netip.Addr{}, fmt.Errorf("connect %s: %w", gw.addr, err)
	}
	st := c.renewer.State()
	// A gateway that speaks tsp/2-rec1 takes the TLS records over after the handshake
	// (tunnel/tlsrec); an older one speaks tsp/2 on crypto/tls's records.
	tcfg := st.ClientTLSConfig(gw.serverName, tlsrec.ALPN, "tsp/2")
	tcfg.ClientSessionCache = c.tickets.forCertificate(st.Leaf.SerialNumber.String())
	tcfg.Certificates = nil
	tcfg.GetClientCertificate = c.renewer.GetClientCertificate
	tc, _, err := tlsrec.Client(dctx, raw, tcfg)
	if err != nil {
		return nil, nil, netip.Addr{}, fmt.Errorf("TLS with %s: %w", gw.addr, err)
	}
	local := raw.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	m, err := tsp.NewClient(tsp.ClientConfig{
		Transport: tsp.TransportTLS, Mechanism: sasl.External, DeferAccept: true,
		Request: c.request(local, resume),
	})
	if err != nil {
		tc.Close()
		return nil, nil, netip.Addr{}, err
	}
	ctl := &control{conn: tc, m: m, sp: tsp.NewSplitter(0), buf: make([]byte, 4096), msgs: make(chan []byte, 4)}
	_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
	offer, err := ctl.negotiate()
	if err != nil {
		tc.Close()
		return nil, nil, netip.Addr{}, err
	}
	_ = tc.SetDeadline(time.Time{})
	return ctl, offer, local, nil
}

// session runs one connection: negotiate, configure the host, carry data until failure.
func (c *Client) session(ctx context.Context) error {
	c.cfg.OnState(Status{State: "connecting", Gateway: c.gateway().addr})
	ctl, offer, local, err := c.dial(ctx, nil)
	if err != nil {
		return err
	}
	defer ctl.conn.Close()
	mtu := int(offer.MTU)
	if mtu == 0 {
		mtu = 1280
	}
	in, err := c.inside(offer, mtu)
	if err != nil {
		return err
	}
	ts, routes := in.ts, in.routes
	ts.lastRx.Store(c.cfg.Now().UnixNano()) // the keepalive clock starts with the session

	roamed := make(chan struct{}, 1)
	link, kind, err := c.startData(ctx, ctl, offer, local, ts, roamed)
	if err != nil {
		return err
	}
	defer link.Close()
	ts.setLink(link)
	// Until the next session's link, what the host sends into the tunnel is dropped (and
	// counted), never routed around it: the device and its routes stay (fail-closed).
	defer ts.setLink(nil)
	st := c.status(offer, kind, routes)
	c.log.Info().Str("lease_v4", offer.Client.IPv4.String()).Str("transport", kind).
		Str("device", st.Device).Strs("routes", st.Routes).Strs("proxy", st.Proxy).Msg("tunnel up")
	c.applyDNS(offer)
	c.cfg.OnState(st)
	c.upSince.Store(c.cfg.Now().UnixNano())
	return c.maintain(ctx, ctl, offer, link, kind, ts, roamed)
}

// hostConfig is what the client changes on the host, on every platform (*hostnet.Host:
// netlink on Linux, ifconfig and route on macOS and FreeBSD, netsh on Windows). Close undoes
// it all.
type hostConfig interface {
	CreateTUN(name string, mtu int) (tun.Device, string, error)
	AddAddress(dev string, prefix netip.Prefix) error
	LinkUp(dev string) error
	AddRoute(dev string, dst netip.Prefix) error
	DisableIPv6(dev string) error
	Close() error
}

// insideState is the TUN device with the lease's address and the tunnel's routes. It lives
// as long as `up` while the sessions get the same lease, MTU and routes (the gateway gives an
// identity its address back, on any gateway of a cluster), so that an outage, a reconnect or
// a failover never leaves the host's IPv4 traffic a way around the tunnel.
type insideState struct {
	host    hostConfig // nil in proxy mode
	device  string     // the TUN device's name (macOS names it utunN itself)
	dev     tun.Device // the netstack device in proxy mode
	ts      *tunSide
	lease   netip.Addr
	mtu     int
	routes  []netip.Prefix
	runDone chan struct{}
}

func (in *insideState) close() {
	in.ts.close()
	if in.host != nil {
		in.host.Close() // the device goes: ts.run returns
	} else {
		in.dev.Close()
	}
	<-in.runDone
}

// inside returns the inside for offer: the one of the previous session when it fits, else a
// new one (the old one removed first).
func (c *Client) inside(offer *tsp.Tunnel, mtu int) (*insideState, error) {
	routes := tunnelRoutes(offer)
	if in := c.in; in != nil {
		if in.lease == offer.Client.IPv4 && in.mtu == mtu && slices.Equal(in.routes, routes) {
			return in, nil
		}
		c.log.Warn().Str("lease_v4", offer.Client.IPv4.String()).Str("from", in.lease.String()).
			Msg("the lease or routes changed: the TUN device is set up again")
		if c.proxy != nil {
			c.proxy.SetNetwork(nil)
		}
		in.close()
		c.in = nil
	}
	if c.proxy != nil {
		return c.netstackInside(offer, mtu, routes)
	}
	if c.cfg.KillSwitch {
		// Before the tunnel's routes: from now on these destinations never leave outside it.
		if err := hostnet.SetKillSwitch(routes); err != nil {
			return nil, err
		}
	}
	host, device, ts, err := c.setupInside(offer, mtu, routes)
	if err != nil {
		return nil, err
	}
	in := &insideState{host: host, device: device, ts: ts, lease: offer.Client.IPv4, mtu: mtu, routes: routes, runDone: make(chan struct{})}
	go func() {
		defer close(in.runDone)
		_ = ts.run()
	}()
	c.in = in
	return in, nil
}

// closeInside removes the TUN device and its routes (`up` ends).
func (c *Client) closeInside() {
	if c.proxy != nil {
		c.proxy.SetNetwork(nil)
	}
	if c.in != nil {
		c.in.close()
		c.in = nil
	}
}

// tunnelRoutes are the routes into the tunnel an offer asks for: the gateway's inner address
// and the pushed routes (all of IPv4 when none are pushed).
func tunnelRoutes(offer *tsp.Tunnel) []netip.Prefix {
	routes := offer.Client.Routes
	if len(routes) == 0 {
		routes = hostnet.FullTunnelRoutes()
	}
	return append([]netip.Prefix{netip.PrefixFrom(offer.Server.IPv4, 32)}, routes...)
}

// setupInside creates the TUN device with the lease and the routes.
func (c *Client) setupInside(offer *tsp.Tunnel, mtu int, routes []netip.Prefix) (hostConfig, string, *tunSide, error) {
	host, err := hostnet.New()
	if err != nil {
		return nil, "", nil, err
	}
	fail := func(err error) (hostConfig, string, *tunSide, error) {
		host.Close()
		return nil, "", nil, err
	}
	dev, name, err := host.CreateTUN(c.cfg.Device, mtu)
	if err != nil {
		return fail(err)
	}
	if err := host.DisableIPv6(name); err != nil {
		c.log.Debug().Err(err).Msg("IPv6 stays on the TUN device")
	}
	lease := offer.Client.IPv4
	if err := host.AddAddress(name, netip.PrefixFrom(lease, 32)); err != nil {
		return fail(err)
	}
	if err := host.LinkUp(name); err != nil {
		return fail(err)
	}
	for _, r := range routes {
		if err := host.AddRoute(name, r); err != nil {
			return fail(err)
		}
	}
	return host, name, newTunSide(dev, mtu, lease.As4()), nil
}

// startData brings the data channel up (before accepting the offer, so the accept names the
// transport that works) and sends the accept.
func (c *Client) startData(ctx context.Context, ctl *control, offer *tsp.Tunnel, local netip.Addr, ts *tunSide, roamed chan<- struct{}) (tunnel.Link, string, error) {
	if offer.Type == tsp.TypeV4V6 {
		link, err := plain.Dial(local, offer.Server.IPv6, ts)
		if err != nil {
			return nil, "", err
		}
		return link, tunnel.Plain, c.accept(ctl, "")
	}
	offered := func(t tsp.TunnelType) bool {
		for _, x := range offer.Data.Transports {
			if x == t {
				return true
			}
		}
		return false
	}
	var dtlsErr error
	if offered(tsp.TypeV4DTLSV6) && c.cfg.Transport != TransportTLS {
		link, err := c.dialDTLS(ctx, offer, local, ts, roamed)
		if err == nil {
			return link, tunnel.DTLS, c.accept(ctl, tsp.TypeV4DTLSV6)
		}
		dtlsErr = err
		c.log.Warn().Err(err).Msg("DTLS did not come up; falling back to the TLS stream")
	}
	if !offered(tsp.TypeV4TLSV6) || c.cfg.Transport == TransportDTLS {
		return nil, "", fmt.Errorf("no usable data transport (DTLS: %v)", dtlsErr)
	}
	if err := c.accept(ctl, tsp.TypeV4TLSV6); err != nil {
		return nil, "", err
	}
	ctl.wmu.Lock()
	rest := ctl.sp.Rest()
	link := stream.New(stream.PrefixConn(ctl.conn, rest), ts, stream.Options{
		MTU: int(offer.MTU), Logger: c.log, KeepaliveInterval: 15 * time.Second,
		Control: func(msg []byte) { c.onControl(ctl, msg) },
	})
	ctl.stream = link
	ctl.wmu.Unlock()
	go func() { _ = link.Run(ctx) }()
	return link, tunnel.TLS, nil
}

// dialDTLS runs the DTLS handshake to the gateway's UDP port, bound to the TSP session by the
// offer's token.
func (c *Client) dialDTLS(ctx context.Context, offer *tsp.Tunnel, local netip.Addr, ts *tunSide, roamed chan<- struct{}) (*dtls.ClientLink, error) {
	server := netip.AddrPortFrom(offer.Server.IPv6, offer.Data.Port)
	uc, err := listenUDP(local)
	if err != nil {
		return nil, err
	}
	rc := dtls.NewRebindConn(uc)
	st := c.renewer.State()
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DTLSTimeout)
	defer cancel()
	link, err := dtls.Dial(dctx, rc, server, dtls.ClientConfig{
		Certificates: []tls.Certificate{st.Certificate}, RootCAs: st.Roots, ServerName: c.gateway().serverName,
		AltServerName: offer.Server.IPv6.String(), Token: offer.Data.Token[:], Logger: c.log,
	}, ts)
	if err != nil {
		return nil, err
	}
	go c.roam(ctx, link, rc, server, roamed)
	return link, nil
}

// accept sends the accept, naming the data transport for extended offers.
func (c *Client) accept(ctl *control, t tsp.TunnelType) error {
	replies, err := ctl.m.Accept(t)
	if err != nil {
		return err
	}
	return ctl.send(replies)
}

// onControl handles a TSP message received as a control frame in stream mode.
func (c *Client) onControl(ctl *control, msg []byte) {
	select {
	case ctl.msgs <- msg:
	default:
	}
}

// maintain renews the lease before its lifetime ends and watches the data link and the
// control connection until one of them fails.
func (c *Client) maintain(ctx context.Context, ctl *control, offer *tsp.Tunnel, link tunnel.Link, kind string, ts *tunSide, roamed <-chan struct{}) error {
	ctlFailed := make(chan ctlErr, 4)
	stop := make(chan struct{}) // ends the readers of replaced and current connections
	defer close(stop)
	readControl := func(ctl *control) { go ctl.readLoop(stop, ctlFailed) }
	// park: the control connection is closed while the DTLS link carries the session, and
	// dialed again (resuming the session) for each lease renewal (Config.ParkControl).
	park := c.cfg.ParkControl && kind == tunnel.DTLS
	parkControl := func() {
		ctl.conn.Close()
		c.log.Debug().Msg("control connection closed until the lease renewal (park)")
	}
	switch {
	case park:
		parkControl()
	case kind != tunnel.TLS:
		readControl(ctl)
	}
	linkDone := link.Done()
	lease := offer.Client.IPv4
	life := time.Duration(offer.Lifetime) * time.Second
	renew := time.NewTimer(life * 2 / 3)
	defer renew.Stop()
	interval := 30 * time.Second
	if k := offer.Client.Keepalive; k != nil && k.Interval > 0 {
		interval = time.Duration(k.Interval) * time.Second
	}
	ka := time.NewTicker(interval)
	defer ka.Stop()
	defer func() { ctl.conn.Close() }()
	// resume moves the session to a new control connection from the current address (after a
	// roam, or when the old connection died while DTLS carries on).
	resume := func(why string) error {
		nctl, o, _, err := c.dial(ctx, offer.Data)
		if err != nil {
			return fmt.Errorf("resume after %s: %w", why, err)
		}
		if o.Client.IPv4 != lease {
			nctl.conn.Close()
			return fmt.Errorf("resume after %s: offered %s instead of %s", why, o.Client.IPv4, lease)
		}
		// Another token or data end point: the gateway did not know the session any more (it
		// ended, or its TEP left) and made a new one, which needs a new data channel.
		if o.Data == nil || o.Data.Token != offer.Data.Token || o.Data.Port != offer.Data.Port || o.Server.IPv6 != offer.Server.IPv6 {
			nctl.conn.Close()
			return fmt.Errorf("resume after %s: the gateway has ended the session (a new one names data end point [%s]:%d)", why, o.Server.IPv6, dataPort(o))
		}
		if err := c.accept(nctl, tsp.TypeV4DTLSV6); err != nil {
			nctl.conn.Close()
			return fmt.Errorf("resume after %s: %w", why, err)
		}
		ctl.conn.Close()
		ctl = nctl
		if !park {
			readControl(ctl)
		}
		life = time.Duration(o.Lifetime) * time.Second
		renew.Reset(life * 2 / 3)
		c.log.Info().Str("reason", why).Msg("control connection resumed; same session and lease")
		return nil
	}
	var seq uint16
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-linkDone:
			return errors.New("data link closed")
		case <-ka.C:
			seq++
			if err := ts.keepalive(link, offer.Server.IPv4.As4(), seq, interval, c.cfg.Now()); err != nil {
				return err
			}
		case <-roamed:
			// A record from the new address at once: the gateway follows the connection ID.
			seq++
			_ = link.WritePackets([][]byte{echoRequest(ts.lease, offer.Server.IPv4.As4(), 0xd57, seq)})
			if park {
				continue // no control connection to move: the link roams by itself
			}
			if err := resume("roaming"); err != nil {
				return err
			}
		case f := <-ctlFailed:
			if f.ctl != ctl {
				continue // a replaced connection
			}
			if kind != tunnel.DTLS {
				return fmt.Errorf("control connection: %w", f.err)
			}
			if err := resume("control connection lost: " + f.err.Error()); err != nil {
				return err
			}
		case <-renew.C:
			if park { // resuming the session renews its lease
				if err := resume("lease renewal"); err != nil {
					return err
				}
				parkControl()
				continue
			}
			replies, err := ctl.m.Renew()
			if err == nil {
				err = ctl.send(replies)
			}
			if err != nil {
				return fmt.Errorf("lease renewal: %w", err)
			}
		case msg := <-ctl.msgs:
			replies, err := ctl.m.Step(msg)
			if err != nil {
				return fmt.Errorf("lease renewal: %w", err)
			}
			if o := ctl.m.Offer(); o != nil && ctl.m.State() == tsp.ClientOffered {
				if o.Client.IPv4 != lease {
					return fmt.Errorf("renewal offered %s instead of %s", o.Client.IPv4, lease)
				}
				acc := tsp.TunnelType("")
				if o.Type.Extended() {
					acc = tsp.TunnelType(kind)
				}
				if replies, err = ctl.m.Accept(acc); err != nil {
					return err
				}
				life = time.Duration(o.Lifetime) * time.Second
				renew.Reset(life * 2 / 3)
				c.log.Info().Str("lease_v4", lease.String()).Dur("lifetime", life).Msg("lease renewed")
			}
			if err := ctl.send(replies); err != nil {
				return err
			}
		}
	}
}

func (c *Client) status(offer *tsp.Tunnel, kind string, routes []netip.Prefix) Status {
	st := Status{
		State: "up", Gateway: c.gateway().addr, Identity: c.renewer.State().Identity,
		Lease: offer.Client.IPv4.String(), Server: offer.Server.IPv4.String(), Transport: kind,
		Device: c.deviceName(), Routes: prefixStrings(routes), Since: c.cfg.Now(), PID: os.Getpid(),
		Expires: c.cfg.Now().Add(time.Duration(offer.Lifetime) * time.Second),
	}
	for _, d := range offer.Client.DNSServers {
		st.DNS = append(st.DNS, d.String())
	}
	st.Domains = slices.Clone(offer.Client.DNSDomains)
	if c.proxy != nil { // rootless: no device, no route on the host
		st.Device, st.Routes, st.Proxy = "", nil, c.cfg.Proxy
	}
	return st
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// udpBuffer is the kernel buffer size of the client's DTLS socket: the default (~208 KiB)
// overflows during a download burst.
const udpBuffer = 4 << 20

// listenUDP opens the client's DTLS socket on a local address with large buffers.
func listenUDP(local netip.Addr) (*net.UDPConn, error) {
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		return nil, err
	}
	_ = udpmux.SetBuffers(uc, udpBuffer) // best effort: smaller buffers only cost throughput
	return uc, nil
}

// dataPort is the offer's DTLS port (0 without a data channel).
func dataPort(o *tsp.Tunnel) uint16 {
	if o.Data == nil {
		return 0
	}
	return o.Data.Port
}

// deviceName is the TUN device's name as the host gave it.
func (c *Client) deviceName() string {
	if c.in != nil && c.in.device != "" {
		return c.in.device
	}
	return c.cfg.Device
}
