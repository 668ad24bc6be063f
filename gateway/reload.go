package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/sso"
)

// Reload applies a validated configuration: the policy, the password file, the sso section and
// pools added at the end of the list take effect at once (the log level is the caller's). It returns the
// changed sections that need a restart. On error nothing changed, except that pools added
// before it stay, and stay listed so that the next reload does not add them again.
func (g *Gateway) Reload(next config.Config) ([]string, error) {
	pol, err := auth.NewPolicy(next.Policy)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var pw *auth.DigestStore
	if next.TSP.Passwords != "" {
		if pw, err = auth.LoadDigestFile(next.TSP.Passwords); err != nil {
			return nil, fmt.Errorf("tsp.passwords: %w", err)
		}
	}
	ssoChanged := g.ca != nil && !reflect.DeepEqual(g.cfg.SSO, next.SSO)
	var signIn *sso.Verifier
	if ssoChanged {
		if signIn, err = g.newSignIn(next.SSO); err != nil {
			return nil, err
		}
	}
	added, restart := diffPools(g.cfg.Pools, next.Pools)
	if !reflect.DeepEqual(pol.Reservations(), g.policy.Load().Reservations()) {
		restart = append(restart, "policy static_v4 reservations")
	}
	lc := LeaseConfig(next, pol, g.now)
	for i, p := range lc.Pools[len(lc.Pools)-len(added):] {
		var err error
		if g.leases != nil { // nil on a TEP node: it routes the pool, the control nodes lease it
			err = g.leases.AddPool(p)
		}
		switch {
		case errors.Is(err, lease.ErrNotHeld):
			// The pool is in use: go on (routes), and say what stays as it was.
			g.log.Warn().Err(err).Str("pool", p.Name).Msg("pool added; leases of an earlier run in it stay until their lifetimes end")
		case err != nil:
			return nil, fmt.Errorf("add pool %s: %w", p.Name, err)
		}
		g.cfg.Pools = append(g.cfg.Pools, added[i])
		routes := append([]netip.Prefix(nil), p.Prefixes...)
		for _, r := range p.Ranges {
			routes = append(routes, config.RangePrefixes(r.First, r.Last)...)
		}
		if g.tep == nil { // a control node whose TEPs run elsewhere
			continue
		}
		if err := g.tep.AddPools(routes...); err != nil {
			return nil, fmt.Errorf("pool %s in the data plane: %w", p.Name, err)
		}
		if g.host == nil { // Options.Device: the gateway does not touch the host
			continue
		}
		for _, pr := range routes {
			if err := g.host.AddRoute(g.tunName, pr); err != nil {
				return nil, fmt.Errorf("route pool %s: %w", p.Name, err)
			}
		}
	}
	g.policy.Store(pol)
	select {
	case <-g.ready: // established sessions too, from their next packet
		if g.tep != nil { // a control node without a TEP enforces nothing
			g.tep.SetAccess(g.accessOf)
		}
	default: // still starting: no session yet, and new ones ask accessOf
	}
	if ssoChanged {
		g.applySignIn(signIn)
		g.cfg.SSO = next.SSO
	}
	if pw != nil || next.TSP.Passwords == "" {
		g.passwords.Store(pw)
	}
	restart = append(restart, restartSections(g.cfg, next)...)
	if next.MemoryLimit != g.cfg.MemoryLimit {
		g.cfg.MemoryLimit = next.MemoryLimit
		g.log.Info().Int64("memory_limit", g.applyMemoryLimit(next)).Msg("memory limit changed")
	}
	g.cfg.Policy = next.Policy
	g.cfg.TSP.Passwords = next.TSP.Passwords
	if g.cfg.Console != nil && next.Console != nil {
		// The operators change at once; the rest of the section needs a restart.
		admins := slices.Clone(next.Console.Admins)
		c := *g.cfg.Console
		c.Admins = admins
		g.cfg.Console = &c
		if g.console != nil {
			g.console.SetAdmins(admins)
		}
	}
	return restart, nil
}

// diffPools returns the pools appended at the end of next; any other change needs a restart.
func diffPools(cur, next []config.Pool) (added []config.Pool, restart []string) {
	if len(next) < len(cur) || !reflect.DeepEqual(cur, next[:len(cur)]) {
		return nil, []string{"pools (only additions at the end reload)"}
	}
	return next[len(cur):], nil
}

// restartSections names the sections that differ and cannot change at run time.
func restartSections(cur, next config.Config) []string {
	var out []string
	check := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	check("state_dir", cur.StateDir, next.StateDir)
	check("listen", cur.Listen, next.Listen)
	check("tep", cur.TEP, next.TEP)
	check("leases", cur.Leases, next.Leases)
	curTSP, nextTSP := cur.TSP, next.TSP
	curTSP.Passwords, nextTSP.Passwords = "", ""
	check("tsp", curTSP, nextTSP)
	check("ca", cur.CA, next.CA)
	check("log.format", cur.Log.Format, next.Log.Format)
	check("metrics", cur.Metrics, next.Metrics)
	check("admin", cur.Admin, next.Admin)
	curConsole, nextConsole := cur.Console, next.Console
	if curConsole != nil && nextConsole != nil {
		a, b := *curConsole, *nextConsole
		a.Admins, b.Admins = nil, nil
		curConsole, nextConsole = &a, &b
	}
	check("console", curConsole, nextConsole)
	return out
}
