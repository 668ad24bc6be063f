package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/bgp"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
)

// Timing of the route announcer: a burst of lease events is answered by one update after
// announceDelay; every announceEvery the announced set is compared with the wanted one anyway
// (events a full subscriber buffer lost, an ownership that ended).
const (
	announceDelay = 50 * time.Millisecond
	announceEvery = 5 * time.Second
)

// startBGP starts the BGP speaker of bgp: (Run calls it once the TEP routes the pools).
func (g *Gateway) startBGP(ctx context.Context) error {
	b := g.cfg.BGP
	cfg := bgp.Config{
		LocalAS: b.LocalAS, RouterID: b.RouterID, NextHop: b.NextHop,
		RestartTime: g.cfg.BGPRestartTime(),
		Log:         g.log.With().Str("component", "bgp").Logger(),
	}
	for i, c := range b.Communities {
		v, err := config.ParseCommunity(c)
		if err != nil {
			return fmt.Errorf("bgp.communities[%d]: %w", i, err)
		}
		cfg.Communities = append(cfg.Communities, v)
	}
	for i, n := range b.Neighbors {
		nb := bgp.Neighbor{Address: n.Address, AS: n.AS, Port: n.Port}
		if n.PasswordFile != "" {
			pw, err := os.ReadFile(n.PasswordFile)
			if err != nil {
				return fmt.Errorf("bgp.neighbors[%d].password_file: %w", i, err)
			}
			nb.Password = strings.TrimRight(strings.SplitN(string(pw), "\n", 2)[0], "\r")
		}
		cfg.Neighbors = append(cfg.Neighbors, nb)
	}
	sp, err := bgp.Start(ctx, cfg)
	if err != nil {
		return err
	}
	g.bgp = sp
	g.log.Info().Uint32("local_as", b.LocalAS).Str("announce", g.cfg.AnnounceMode()).
		Dur("restart_time", cfg.RestartTime).Int("neighbors", len(cfg.Neighbors)).Msg("BGP speaker started")
	return nil
}

// announce keeps the announced routes equal to routes() until ctx ends.
func (g *Gateway) announce(ctx context.Context) error {
	// The cue to look again: lease events, or on a TEP node its bindings.
	var events <-chan lease.Event
	var bound <-chan struct{}
	if g.leases != nil {
		ev, cancel := g.leases.Subscribe(lease.DefaultEventBuffer)
		defer cancel()
		events = ev
	} else {
		bound = g.binder.Changed()
	}
	tick := time.NewTicker(announceEvery)
	defer tick.Stop()
	soon := time.NewTimer(0) // the first update at once
	defer soon.Stop()
	var failing bool
	for {
		var lost <-chan struct{}
		if g.etcd != nil {
			lost = g.etcd.Lost()
		}
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if g.cfg.AnnounceMode() == config.AnnounceLeases && ev.Kind != lease.EventRenewed {
				soon.Reset(announceDelay)
			}
			continue
		case <-bound:
			if g.cfg.AnnounceMode() == config.AnnounceLeases {
				soon.Reset(announceDelay)
			}
			continue
		case <-lost:
		case <-soon.C:
		case <-tick.C:
		}
		err := g.bgp.Set(ctx, g.routes())
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			g.log.Warn().Err(err).Msg("BGP announcement failed; retrying")
			failing = true
		case err == nil && failing:
			g.log.Info().Int("prefixes", len(g.bgp.Announced())).Msg("BGP announcement repaired")
			failing = false
		}
	}
}

// routes is what this gateway announces: the pools, or the /32 of each active lease of its
// live sessions (on a TEP node: of the sessions bound to it) while it owns them (nothing once
// its etcd ownership is lost).
func (g *Gateway) routes() []netip.Prefix {
	if g.cfg.AnnounceMode() == config.AnnouncePools {
		return g.poolPrefixes()
	}
	if g.etcd != nil {
		if _, _, ok := g.etcd.Ownership(); !ok {
			return nil
		}
	}
	if g.binder != nil { // a TEP node: the sessions bound to it
		return g.binder.Routes()
	}
	var out []netip.Prefix
	for _, l := range g.leases.List() {
		// Only what the data plane serves: a lease whose session ended while the store was
		// out of reach stays active in the cache until the store is back.
		if l.State == lease.StateActive && l.Owner == g.node && g.ctl.Serves(l.Session) {
			out = append(out, netip.PrefixFrom(l.Addr, 32))
		}
	}
	return out
}

// stopBGP withdraws every route and closes the sessions (a stopping gateway).
func (g *Gateway) stopBGP(ctx context.Context) {
	if g.bgp == nil {
		return
	}
	if err := g.bgp.Stop(ctx); err != nil {
		g.log.Warn().Err(err).Msg("BGP: routes not all withdrawn at shutdown")
	}
}

// bgpStatus is the BGP part of `status`.
func (g *Gateway) bgpStatus(ctx context.Context) *admin.BGP {
	if g.bgp == nil {
		return nil
	}
	st := g.bgp.Status(ctx)
	out := &admin.BGP{Announce: g.cfg.AnnounceMode(), Announced: st.Announced, LastError: st.LastError}
	for _, n := range st.Neighbors {
		out.Neighbors = append(out.Neighbors, admin.BGPNeighbor{Address: n.Address, AS: n.AS, State: n.State, Since: n.Since,
			Received: n.Received, Kept: n.Kept})
	}
	return out
}

// BGPState is the metrics' BGP source.
func (g *Gateway) BGPState() (int, map[string]bool) {
	st := g.bgp.Status(context.Background())
	up := make(map[string]bool, len(st.Neighbors))
	for _, n := range st.Neighbors {
		up[n.Address] = n.Established
	}
	return st.Announced, up
}
