package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/control"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/internal/park"
	"github.com/dstmgw/dstm/tunnel/udpmux"
)

// Run brings the gateway up on the host (TUN device, routes, sockets) and serves until ctx
// ends or a component fails; everything it set up is removed before it returns.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	g.started = g.now()
	memLimit := g.applyMemoryLimit(g.cfg)
	defer debug.SetMemoryLimit(g.memLimitAtStart)
	fds := raiseFDLimit()
	g.maxConns = connLimit(fds)
	if g.opts.MaxConns > 0 {
		g.maxConns = g.opts.MaxConns
	}
	if !g.cfg.Has(config.RoleControl) {
		return g.runTEP(ctx, cancel, fds)
	}
	if g.cfg.Has(config.RoleTEP) {
		closeInside, err := g.openInside()
		if err != nil {
			return err
		}
		defer closeInside()
	} else {
		g.teps = g.newDirectory()
	}
	tcps, udps, err := g.listen(true)
	if err != nil {
		return err
	}
	adminLn, err := admin.Listen(g.cfg.Admin.Socket)
	if err != nil {
		closeAll(tcps, udps)
		return fmt.Errorf("admin socket: %w", err)
	}
	var consoleLn net.Listener
	if g.cfg.Console != nil {
		if consoleLn, err = g.listenConsole(); err != nil {
			closeAll(tcps, udps)
			adminLn.Close()
			return err
		}
	}
	closeConsole := func() {
		if consoleLn != nil {
			consoleLn.Close()
		}
	}
	// Idle established TCP and TLS sessions wait here, without a goroutine each.
	if g.park, err = park.New(); err != nil {
		g.log.Warn().Err(err).Msg("no poller for idle sessions: each keeps a goroutine")
	} else {
		defer g.park.Close() // after ctl.Wait below: no session is left to park
	}
	if err := g.setupControl(udps); err != nil {
		closeAll(tcps, udps)
		adminLn.Close()
		closeConsole()
		return err
	}
	if g.cfg.BGP != nil {
		if err := g.startBGP(ctx); err != nil {
			closeAll(tcps, udps)
			adminLn.Close()
			closeConsole()
			return err
		}
	}
	g.metrics.SetSources(leaseStats{g.leases}, g.ctl, g)
	if g.etcd != nil {
		g.metrics.SetCluster(g)
	}
	if g.bgp != nil {
		g.metrics.SetBGP(g)
	}

	var wg sync.WaitGroup
	spawn := g.spawner(ctx, cancel, &wg)
	if g.tep != nil {
		spawn("tep", g.tep.Run)
	}
	if g.teps != nil {
		spawn("tep-directory", g.teps.Run)
	}
	spawn("leases", g.leases.Run)
	spawn("lease-store", g.leases.Follow)
	if g.etcd != nil {
		spawn("ownership", g.fenceOwnership)
	}
	if g.bgp != nil {
		spawn("bgp", g.announce)
	}
	spawn("ca", g.ca.Run)
	spawn("lease-events", g.ctl.FollowLeases)
	spawn("revocations", g.followRevocations)
	spawn("enrollment", g.serveEnrollment)
	spawn("ticket-keys", g.rotateTicketKeys)
	g.spawnAdmin(spawn, adminLn)
	if consoleLn != nil {
		spawn("console", g.serveConsole(consoleLn))
	}
	if g.mux != nil {
		spawn("udp", g.mux.Run)
		spawn("tsp-udp", func(ctx context.Context) error { g.ctl.ServeUDP(ctx); return nil })
	}
	for _, ln := range tcps {
		spawn("tcp", func(ctx context.Context) error { return g.ctl.ServeTCP(ctx, ln) })
	}
	close(g.ready)
	g.log.Info().Strs("listen", g.listenAddr).Str("device", g.cfg.TEP.Device).
		Str("inner_v4", g.cfg.TEP.InnerV4.String()).Str("version", g.version).
		Uint64("fd_limit", fds).Int("max_connections", g.maxConns).Int64("memory_limit", memLimit).Msg("gateway running")

	<-ctx.Done()
	g.log.Info().Msg("gateway stopping")
	g.stop()
	wg.Wait()
	g.ctl.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// spawner returns the function that runs a component on its goroutine (counted in wg): a
// component that fails while ctx is live stops the gateway.
func (g *Gateway) spawner(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup) func(string, func(context.Context) error) {
	return func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				g.log.Error().Err(err).Str("component", name).Msg("component failed; shutting down")
				cancel(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
}

// spawnAdmin serves the admin API on adminLn and, when configured, the metrics.
func (g *Gateway) spawnAdmin(spawn func(string, func(context.Context) error), adminLn net.Listener) {
	spawn("admin", func(ctx context.Context) error {
		return admin.NewServer(adminBackend{g}, g.log.With().Str("component", "admin").Logger()).ServeListener(ctx, adminLn)
	})
	if g.cfg.Metrics.Listen != "" {
		spawn("metrics", func(ctx context.Context) error {
			return g.metrics.ListenAndServe(ctx, g.cfg.Metrics.Listen, metrics.ServeOptions{Profiling: g.cfg.Metrics.Pprof})
		})
	}
}

// stopTimeout bounds the lease commits of a stopping gateway.
const stopTimeout = 30 * time.Second

// stop holds every lease for its identity in a few batched commits, writes the session ends
// kept in memory, then ends the sessions (nothing left to release) and closes the UDP port.
func (g *Gateway) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	g.stopBGP(ctx) // first: the routers stop sending traffic here
	if _, err := g.leases.ReleaseAll(ctx, lease.Reason("shutdown")); err != nil {
		g.log.Warn().Err(err).Msg("leases not held at shutdown; they are at the next start")
	}
	// Else the next start would hold those leases again from its own time.
	if _, err := g.leases.Flush(ctx); err != nil {
		g.log.Warn().Err(err).Msg("lease holds not written at shutdown; the next start holds them again")
	}
	g.ctl.EndAll(lease.ReasonClosed)
	g.stopUDP()
}

// setupControl builds the control plane, whose idle sessions park on g.park, and, with UDP, the UDP port's demultiplexer that
// serves it, with the DTLS server when this node has a TEP. The mux owns udps from then on.
func (g *Gateway) setupControl(udps []*net.UDPConn) error {
	write := func(b []byte, to netip.AddrPort) error { return g.mux.WriteTo(b, to) }
	var pt control.PlainTransport
	if g.plain != nil {
		pt = g.plain
	}
	var remote control.Remote
	if g.teps != nil {
		remote = g.teps
	}
	ctl, err := control.New(control.Config{
		Gateway: g.cfg, Leases: g.leases, TEP: g.tep, Remote: remote, Plain: pt,
		DTLS: len(udps) > 0, DataPort: g.dataPort(), WriteUDP: write,
		Policy: g.policy, Passwords: g.passwords.Load, TLS: g.tlsConfig,
		Park: g.park, MaxConns: g.maxConns, Enroll: g.enroll.deliver, Metrics: g.metrics, Events: g.recordEvent, Logger: g.log, Now: g.now,
	})
	if err != nil {
		return err
	}
	g.ctl = ctl
	switch {
	case len(udps) == 0:
		return nil
	case g.tep == nil: // DTLS is served by the TEP nodes
		g.mux, err = udpmux.New(udpmux.Config{TSP: ctl.UDP(), Logger: g.log.With().Str("component", "udp").Logger()}, udps...)
		return err
	}
	return g.serveDTLS(udps, ctl.BindDTLS, ctl.UDP())
}

// dataPort is the UDP port announced for the DTLS data channel.
func (g *Gateway) dataPort() uint16 {
	if len(g.udpAddrs) > 0 {
		return uint16(g.udpAddrs[0].(*net.UDPAddr).Port)
	}
	return g.cfg.Listen.Addresses[0].Port()
}

func closeAll(tcps []net.Listener, udps []*net.UDPConn) {
	for _, ln := range tcps {
		ln.Close()
	}
	for _, u := range udps {
		u.Close()
	}
}
