package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/control"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/metrics"
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
	fds := raiseFDLimit()
	g.maxConns = connLimit(fds)
	if g.opts.MaxConns > 0 {
		g.maxConns = g.opts.MaxConns
	}
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
	adminLn, err := admin.Listen(g.cfg.Admin.Socket)
	if err != nil {
		closeAll(tcps, udps)
		return fmt.Errorf("admin socket: %w", err)
	}
	if err := g.setupControl(udps); err != nil {
		closeAll(tcps, udps)
		adminLn.Close()
		return err
	}
	if g.cfg.BGP != nil {
		if err := g.startBGP(ctx); err != nil {
			closeAll(tcps, udps)
			adminLn.Close()
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
	spawn("admin", func(ctx context.Context) error {
		return admin.NewServer(adminBackend{g}, g.log.With().Str("component", "admin").Logger()).ServeListener(ctx, adminLn)
	})
	if g.cfg.Metrics.Listen != "" {
		spawn("metrics", func(ctx context.Context) error {
			return g.metrics.ListenAndServe(ctx, g.cfg.Metrics.Listen, metrics.ServeOptions{Profiling: g.cfg.Metrics.Pprof})
		})
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
		Uint64("fd_limit", fds).Int("max_connections", g.maxConns).Msg("gateway running")

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
	if g.mux != nil {
		g.mux.Close()
	}
	if g.dtls != nil {
		g.dtls.Close()
	}
}

// setupControl builds the control plane and, with UDP, the DTLS server and the UDP port's
// demultiplexer that serve it. The mux owns udps from then on.
func (g *Gateway) setupControl(udps []*net.UDPConn) error {
	var mux *udpmux.Mux
	write := func(b []byte, to netip.AddrPort) error { return mux.WriteTo(b, to) }
	var pt control.PlainTransport
	if g.plain != nil {
		pt = g.plain
	}
	ctl, err := control.New(control.Config{
		Gateway: g.cfg, Leases: g.leases, TEP: g.tep, Plain: pt,
		DTLS: len(udps) > 0, DataPort: g.dataPort(), WriteUDP: write,
		Policy: g.policy, Passwords: g.passwords.Load, TLS: g.tlsConfig,
		MaxConns: g.maxConns, Enroll: g.enroll.deliver, Metrics: g.metrics, Logger: g.log, Now: g.now,
	})
	if err != nil {
		return err
	}
	g.ctl = ctl
	if len(udps) == 0 {
		return nil
	}
	d, err := dtls.NewServer(dtls.ServerConfig{
		GetCertificate:        g.ca.GetCertificate,
		VerifyPeerCertificate: g.verifier.VerifyPeerCertificate,
		Bind:                  ctl.BindDTLS,
		Write:                 write,
		WriteBatch:            func(bufs [][]byte, to netip.AddrPort) error { return mux.WriteBatch(bufs, to) },
		HandshakeTimeout:      g.cfg.TSP.HandshakeTimeout.D(),
		MaxHandshakes:         g.cfg.TSP.MaxHandshakes,
		MTU:                   control.DTLSRecordMTU,
		Now:                   g.now,
		Logger:                g.log.With().Str("component", "dtls").Logger(),
	})
	if err != nil {
		return err
	}
	mux, err = udpmux.New(udpmux.Config{TSP: ctl.UDP(), DTLS: d, Logger: g.log.With().Str("component", "udp").Logger()}, udps...)
	if err != nil {
		d.Close()
		return err
	}
	g.dtls, g.mux = d, mux
	return nil
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
