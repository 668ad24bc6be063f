package gateway

import (
	"fmt"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/tunnel/plain"
)

// openInside sets up the TEP: the TUN device (or Options.Device), its routes, the TEP and
// the plain v4v6 transport. close undoes it all.
func (g *Gateway) openInside() (close func(), err error) {
	var undo []func()
	close = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if g.opts.Device != nil {
		if err := g.newTEP(g.opts.Device, g.poolPrefixes()); err != nil {
			return nil, err
		}
	} else {
		host, err := hostnet.New()
		if err != nil {
			return nil, err
		}
		undo = append(undo, func() { host.Close() })
		if err := g.setupInside(host); err != nil {
			close()
			return nil, err
		}
	}
	undo = append(undo, func() { g.tep.Close() })
	if g.cfg.TEP.PlainTransport {
		if g.plain, err = plain.Listen(g.cfg.TEP.IPv6); err != nil {
			close()
			return nil, fmt.Errorf("plain v4v6 transport on %s: %w", g.cfg.TEP.IPv6, err)
		}
		undo = append(undo, func() { g.plain.Close() })
	}
	return close, nil
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
		Access: g.accessOf,
	})
	return err
}

// accessOf returns the access rules of identity under the current policy (the TEP asks when a
// session starts and when Reload re-applies them).
func (g *Gateway) accessOf(identity string, groups []string) *acl.Set {
	return g.policy.Load().AccessWith(identity, groups)
}

// poolPrefixes covers every pool with prefixes (ranges become their covering prefixes).
func (g *Gateway) poolPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range g.cfg.Pools {
		out = append(out, p.Prefixes...)
		for _, r := range p.Ranges {
			out = append(out, config.RangePrefixes(r.First, r.Last)...)
		}
	}
	return out
}
