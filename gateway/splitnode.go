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
	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
	"github.com/dstmgw/dstm/gateway/split"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/dtls"
	"github.com/dstmgw/dstm/tunnel/udpmux"
)

// Split roles (docs/cluster.md, "Control and TEP nodes"): a control node picks a TEP node per
// session through a split.Directory; a TEP node serves the sessions bound to it through a
// split.Binder. Both meet in etcd.

// tepInfo is what a TEP node announces in its member record.
func (g *Gateway) tepInfo() *etcdstore.TEPInfo {
	t := &etcdstore.TEPInfo{IPv6: g.cfg.TEP.IPv6, InnerV4: g.cfg.TEP.InnerV4, MTU: g.cfg.TEP.MTU, Plain: g.cfg.TEP.PlainTransport}
	if g.cfg.Listen.UDP {
		t.DTLSPort = g.cfg.Listen.Addresses[0].Port()
	}
	return t
}

func (g *Gateway) etcdPrefix() string {
	if p := g.cfg.Store.Etcd.Prefix; p != "" {
		return p
	}
	return etcdstore.DefaultPrefix
}

// newDirectory is a control node's view of its TEP nodes. The sessions of a TEP that leaves
// end (the control plane exists by the time the directory runs).
func (g *Gateway) newDirectory() *split.Directory {
	return split.NewDirectory(split.DirectoryConfig{
		Client: g.etcd.Client(), Prefix: g.etcdPrefix(), Members: g.etcd.MembersPrefix(), Node: g.node, Owner: g.etcd,
		Timeout: g.cfg.Store.Etcd.RequestTimeout.D(),
		Lost:    func(name string) { g.ctl.TEPLost(name) },
		Log:     g.log.With().Str("component", "tep-directory").Logger(),
	})
}

// runTEP is Run for a node with the tep role only: the TUN device, the DTLS and v4v6
// transports for the sessions the control nodes bind to it, and the route announcements.
func (g *Gateway) runTEP(ctx context.Context, cancel context.CancelCauseFunc, fds uint64) error {
	closeInside, err := g.openInside()
	if err != nil {
		return err
	}
	defer closeInside()
	var pt split.PlainTransport
	if g.plain != nil {
		pt = g.plain
	}
	g.binder = split.NewBinder(split.BinderConfig{
		TEP: g.tep, Plain: pt, Log: g.log.With().Str("component", "tep-bindings").Logger(),
		MTU: func(transport string) int { return control.DataMTU(tsp.TunnelType(transport), g.cfg.TEP.MTU) },
	})
	_, udps, err := g.listen(false)
	if err != nil {
		return err
	}
	adminLn, err := admin.Listen(g.cfg.Admin.Socket)
	if err != nil {
		closeAll(nil, udps)
		return fmt.Errorf("admin socket: %w", err)
	}
	if len(udps) > 0 {
		if err := g.serveDTLS(udps, g.binder.BindDTLS, nil); err != nil {
			closeAll(nil, udps)
			adminLn.Close()
			return err
		}
	}
	if g.cfg.BGP != nil {
		if err := g.startBGP(ctx); err != nil {
			g.stopUDP()
			adminLn.Close()
			return err
		}
	}
	g.metrics.SetSources(leaseStats{}, tepSessions{g}, g)
	g.metrics.SetCluster(g)
	if g.bgp != nil {
		g.metrics.SetBGP(g)
	}
	resync := make(chan struct{}, 1)
	var wg sync.WaitGroup
	spawn := g.spawner(ctx, cancel, &wg)
	spawn("tep", g.tep.Run)
	spawn("bindings", func(ctx context.Context) error {
		return split.Follow(ctx, split.FollowConfig{
			Client: g.etcd.Client(), Prefix: g.etcdPrefix(), TEP: g.node, Timeout: g.cfg.Store.Etcd.RequestTimeout.D(),
			Resync: resync, Log: g.log.With().Str("component", "tep-bindings").Logger(),
		}, g.binder)
	})
	spawn("ownership", func(ctx context.Context) error { return g.fenceTEP(ctx, resync) })
	if g.bgp != nil {
		spawn("bgp", g.announce)
	}
	spawn("ca", g.ca.Run)
	g.spawnAdmin(spawn, adminLn)
	if g.mux != nil {
		spawn("udp", g.mux.Run)
	}
	close(g.ready)
	g.log.Info().Strs("listen", g.listenAddr).Strs("roles", g.cfg.Roles).Str("device", g.cfg.TEP.Device).
		Str("tep_v6", g.cfg.TEP.IPv6.String()).Str("inner_v4", g.cfg.TEP.InnerV4.String()).
		Bool("plain", g.plain != nil).Str("version", g.version).Uint64("fd_limit", fds).Msg("TEP node running")

	<-ctx.Done()
	g.log.Info().Msg("TEP node stopping")
	stopCtx, stop := context.WithTimeout(context.Background(), stopTimeout)
	g.stopBGP(stopCtx)
	stop()
	g.binder.Fence()
	g.stopUDP()
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// fenceTEP ends every session of this TEP node when its etcd ownership is lost (the control
// nodes move them to another TEP), and lets bindings in again once it is back.
func (g *Gateway) fenceTEP(ctx context.Context, resync chan<- struct{}) error {
	lost := g.etcd.Lost()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
		}
		lost = g.etcd.Lost()
		n := g.binder.Fence()
		g.log.Error().Int("sessions", n).Msg("etcd ownership lost: every session of this TEP ended; the control nodes bind them elsewhere")
		tick := time.NewTicker(ownershipPoll)
		for ok := false; !ok; {
			select {
			case <-ctx.Done():
				tick.Stop()
				return nil
			case <-tick.C:
				_, _, ok = g.etcd.Ownership()
			}
		}
		tick.Stop()
		g.binder.Unfence()
		select {
		case resync <- struct{}{}:
		default:
		}
		g.log.Info().Msg("etcd ownership back: this TEP takes bindings again")
	}
}

// ownershipPoll paces a fenced TEP's check for a new ownership lease.
const ownershipPoll = 100 * time.Millisecond

// serveDTLS starts the DTLS server (links bound by bind) and the UDP demultiplexer of udps,
// which it owns from then on; tspUDP is the TSP-over-UDP handler (nil on a TEP node).
func (g *Gateway) serveDTLS(udps []*net.UDPConn, bind dtls.BindFunc, tspUDP udpmux.Handler) error {
	var mux *udpmux.Mux
	write := func(b []byte, to netip.AddrPort) error { return mux.WriteTo(b, to) }
	d, err := dtls.NewServer(dtls.ServerConfig{
		GetCertificate:        g.ca.GetCertificate,
		VerifyPeerCertificate: g.verifier.VerifyPeerCertificate,
		Bind:                  bind,
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
	mux, err = udpmux.New(udpmux.Config{TSP: tspUDP, DTLS: d, Logger: g.log.With().Str("component", "udp").Logger()}, udps...)
	if err != nil {
		d.Close()
		return err
	}
	g.dtls, g.mux = d, mux
	return nil
}

// stopUDP closes the UDP port and the DTLS server.
func (g *Gateway) stopUDP() {
	if g.mux != nil {
		g.mux.Close()
	}
	if g.dtls != nil {
		g.dtls.Close()
	}
}

// tepSessions counts a TEP node's sessions by transport (metrics.SessionStats).
type tepSessions struct{ g *Gateway }

func (t tepSessions) SessionCounts() map[string]int {
	out := map[string]int{}
	for _, s := range t.g.tep.Sessions() {
		out[s.Transport]++
	}
	return out
}
