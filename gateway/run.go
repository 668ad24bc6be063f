package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/tunnel/dtls"
	"github.com/dstmgw/dstm/tunnel/plain"
	"github.com/dstmgw/dstm/tunnel/udpmux"
)

// Run brings the gateway up on the host (TUN device, routes, sockets) and serves until ctx
// ends or a component fails; everything it set up is removed before it returns.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g.started = g.now()
	if g.opts.Device != nil {
		if err := g.newTEP(g.opts.Device, g.poolPrefixes()); err != nil {
			return err
		}
	} else {
		host, err := hostnet.New()
		if err != nil {
			return err
		}
		defer host.Close()
		if err := g.setupInside(host); err != nil {
			return err
		}
	}
	defer g.tep.Close()
	var err error
	if g.cfg.TEP.PlainTransport {
		if g.plain, err = plain.Listen(g.cfg.TEP.IPv6); err != nil {
			return fmt.Errorf("plain v4v6 transport on %s: %w", g.cfg.TEP.IPv6, err)
		}
		defer g.plain.Close()
	}
	tcps, udps, err := g.listen()
	if err != nil {
		return err
	}
	mux, udpTSP, err := g.setupUDP(udps)
	if err != nil {
		closeAll(tcps)
		return err
	}
	g.mux = mux
	g.metrics.SetSources(g, g, g)

	var wg sync.WaitGroup
	spawn := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				g.log.Error().Err(err).Str("component", name).Msg("component failed; shutting down")
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	spawn("tep", g.tep.Run)
	spawn("leases", g.leases.Run)
	spawn("ca", g.ca.Run)
	spawn("lease-events", g.followLeases)
	spawn("revocations", g.followRevocations)
	spawn("enrollment", g.serveEnrollment)
	adminLn, err := admin.Listen(g.cfg.Admin.Socket)
	if err != nil {
		cancel(err)
		wg.Wait()
		closeAll(tcps)
		return fmt.Errorf("admin socket: %w", err)
	}
	spawn("admin", func(ctx context.Context) error {
		return admin.NewServer(adminBackend{g}, g.log.With().Str("component", "admin").Logger()).ServeListener(ctx, adminLn)
	})
	if g.cfg.Metrics.Listen != "" {
		spawn("metrics", func(ctx context.Context) error { return g.metrics.ListenAndServe(ctx, g.cfg.Metrics.Listen) })
	}
	if mux != nil {
		spawn("udp", mux.Run)
		spawn("tsp-udp", func(ctx context.Context) error { udpTSP.run(ctx); return nil })
	}
	for _, ln := range tcps {
		spawn("tcp", func(ctx context.Context) error { return g.serveTCP(ctx, ln) })
	}
	close(g.ready)
	g.log.Info().Strs("listen", g.listenAddr).Str("device", g.cfg.TEP.Device).
		Str("inner_v4", g.cfg.TEP.InnerV4.String()).Str("version", g.version).Msg("gateway running")

	<-ctx.Done()
	g.log.Info().Msg("gateway stopping")
	// Hold every lease for its identity in a few batched commits first; ending the sessions
	// one by one then finds nothing left to release and is quick however many there are.
	if _, err := g.leases.ReleaseAll(context.Background(), lease.Reason("shutdown")); err != nil {
		g.log.Warn().Err(err).Msg("leases not held at shutdown; they are at the next start")
	}
	// The ends of sessions kept in memory (lease.Manager.Release) are written with their
	// hold times; else the next start would hold those leases again from its own time.
	if _, err := g.leases.Flush(context.Background()); err != nil {
		g.log.Warn().Err(err).Msg("lease holds not written at shutdown; the next start holds them again")
	}
	for _, s := range g.sessions.all() {
		g.endSession(s, lease.ReasonClosed)
	}
	if mux != nil {
		mux.Close()
	}
	if g.dtls != nil {
		g.dtls.Close()
	}
	wg.Wait()
	g.wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// setupInside creates the TUN device with the inner address, routes every pool into it and
// checks IPv4 forwarding.
func (g *Gateway) setupInside(host *hostnet.Host) error {
	if err := host.CheckIPv4Forwarding(g.cfg.TEP.EnableForwarding); err != nil {
		return err
	}
	dev, name, err := host.CreateTUN(g.cfg.TEP.Device, g.cfg.TEP.MTU)
	if err != nil {
		return err
	}
	g.host, g.tunName = host, name
	if err := host.DisableIPv6(name); err != nil {
		g.log.Debug().Err(err).Msg("IPv6 stays on the TUN device")
	}
	if err := host.AddAddress(name, netip.PrefixFrom(g.cfg.TEP.InnerV4, 32)); err != nil {
		return err
	}
	if err := host.LinkUp(name); err != nil {
		return err
	}
	var pools []netip.Prefix
	for _, p := range g.poolPrefixes() {
		if err := host.AddRoute(name, p); err != nil {
			return err
		}
		pools = append(pools, p)
	}
	return g.newTEP(dev, pools)
}

func (g *Gateway) newTEP(dev tun.Device, pools []netip.Prefix) error {
	var err error
	g.tep, err = tep.New(tep.Config{
		Device: dev, InnerAddr: g.cfg.TEP.InnerV4, Pools: pools, MTU: g.cfg.TEP.MTU,
		Logger: g.log.With().Str("component", "tep").Logger(), Now: g.now,
	})
	return err
}

// poolPrefixes covers every pool with prefixes (ranges become their covering prefixes).
func (g *Gateway) poolPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range g.cfg.Pools {
		out = append(out, p.Prefixes...)
		for _, r := range p.Ranges {
			out = append(out, rangePrefixes(r.First, r.Last)...)
		}
	}
	return out
}

// rangePrefixes returns the smallest list of prefixes exactly covering first..last (IPv4).
func rangePrefixes(first, last netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	lo, hi := u32(first), u32(last)
	for lo <= hi {
		bits := 32
		for bits > 0 {
			size := uint64(1) << (32 - (bits - 1))
			if uint64(lo)%size != 0 || uint64(lo)+size-1 > uint64(hi) {
				break
			}
			bits--
		}
		out = append(out, netip.PrefixFrom(fromU32(lo), bits))
		next := uint64(lo) + uint64(1)<<(32-bits)
		if next > uint64(hi) {
			break
		}
		lo = uint32(next)
	}
	return out
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// TCP keepalive of TSP connections (Go's defaults): the first probe after 15 s of silence,
// then every 15 s; nine unanswered probes close the connection. It ends the control
// connections of clients that vanished without closing (a laptop put to sleep), which
// gogoc keeps open, idle, for the life of its tunnel.
const (
	tcpKeepIdle  = 15 // seconds
	tcpKeepIntvl = 15 // seconds
	tcpKeepCnt   = 9
)

// tcpListenConfig sets the TSP port's socket options on the listening socket, where Linux
// copies them into every accepted connection:
//   - TCP_DEFER_ACCEPT: every protocol on the port (TSP, TLS) has the client speak first,
//     so the kernel hands a connection over only once its first bytes are in. That saves
//     each connection a read that would find nothing and a wake-up, and connections that
//     never send anything never reach the gateway's handshake slots. The kernel drops them
//     after about the handshake timeout.
//   - TCP keepalive (SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT), instead of four setsockopt
//     calls on each accepted connection (Go's net package does that unless KeepAlive < 0).
func (g *Gateway) tcpListenConfig() *net.ListenConfig {
	secs := max(1, int(g.cfg.TSP.HandshakeTimeout.D()/time.Second))
	opts := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, tcpKeepIdle},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, tcpKeepIntvl},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, tcpKeepCnt},
	}
	return &net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			for _, o := range opts {
				if err := unix.SetsockoptInt(int(fd), o.level, o.opt, o.value); err != nil {
					serr = fmt.Errorf("%s: %w", o.name, err)
					return
				}
			}
		}); err != nil {
			return err
		}
		return serr
	}}
}

// listen opens the TCP and UDP sockets of the TSP port on every configured address.
func (g *Gateway) listen() ([]net.Listener, []*net.UDPConn, error) {
	var tcps []net.Listener
	var udps []*net.UDPConn
	fail := func(err error) ([]net.Listener, []*net.UDPConn, error) {
		closeAll(tcps)
		for _, u := range udps {
			u.Close()
		}
		return nil, nil, err
	}
	for _, a := range g.cfg.Listen.Addresses {
		network := "tcp"
		if a.Addr().Is6() && !a.Addr().Is4In6() && !a.Addr().IsUnspecified() {
			network = "tcp6"
		}
		ln, err := g.tcpListenConfig().Listen(context.Background(), network, a.String())
		if err != nil {
			return fail(fmt.Errorf("listen tcp %s: %w", a, err))
		}
		tcps = append(tcps, ln)
		g.tcpAddrs = append(g.tcpAddrs, ln.Addr())
		g.listenAddr = append(g.listenAddr, "tcp "+ln.Addr().String())
		if !g.cfg.Listen.UDP {
			continue
		}
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		if err != nil {
			return fail(fmt.Errorf("listen udp %s: %w", a, err))
		}
		udps = append(udps, uc)
		g.udpAddrs = append(g.udpAddrs, uc.LocalAddr())
		g.listenAddr = append(g.listenAddr, "udp "+uc.LocalAddr().String())
	}
	if g.enroll == nil {
		g.enroll = newChanListener(tcps[0].Addr())
	}
	return tcps, udps, nil
}

// setupUDP builds the UDP demultiplexer with the TSP and DTLS handlers.
func (g *Gateway) setupUDP(udps []*net.UDPConn) (*udpmux.Mux, *udpTSP, error) {
	if len(udps) == 0 {
		return nil, nil, nil
	}
	var mux *udpmux.Mux
	write := func(b []byte, to netip.AddrPort) error { return mux.WriteTo(b, to) }
	u := newUDPTSP(g, write)
	d, err := dtls.NewServer(dtls.ServerConfig{
		GetCertificate:        g.ca.GetCertificate,
		VerifyPeerCertificate: g.verifier.VerifyPeerCertificate,
		Bind:                  g.bindDTLS,
		Write:                 write,
		HandshakeTimeout:      g.cfg.TSP.HandshakeTimeout.D(),
		MaxHandshakes:         g.cfg.TSP.MaxHandshakes,
		MTU:                   dtlsMTU + 100,
		Now:                   g.now,
		Logger:                g.log.With().Str("component", "dtls").Logger(),
	})
	if err != nil {
		return nil, nil, err
	}
	g.dtls = d
	mux, err = udpmux.New(udpmux.Config{TSP: u, DTLS: d, Logger: g.log.With().Str("component", "udp").Logger()}, udps...)
	if err != nil {
		d.Close()
		g.dtls = nil
		return nil, nil, err
	}
	return mux, u, nil
}

// serveEnrollment serves the CA's enrollment API to TLS connections with ALPN http/1.1.
func (g *Gateway) serveEnrollment(ctx context.Context) error {
	srv := &http.Server{
		Handler:           g.ca.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() {
		<-ctx.Done()
		g.enroll.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(g.enroll); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}
