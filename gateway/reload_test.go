package gateway_test

import (
	"bytes"
	"net/netip"
	"runtime/debug"
	"slices"
	"testing"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/stream"
)

func TestReload(t *testing.T) {
	gw := startGateway(t, nil)
	ctx := testCtx(t)

	next := gw.cfg
	next.Pools = append(slices.Clone(gw.cfg.Pools), config.Pool{Name: "extra", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}})
	next.Policy = auth.PolicyConfig{Unknown: auth.UnknownRefuse}
	next.TEP.MTU = 1300
	restart, err := gw.g.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(restart, "tep") || len(restart) != 1 {
		t.Fatalf("restart needed = %v, want [tep]", restart)
	}
	st, err := gw.admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range st.Pools {
		names = append(names, p.Name)
	}
	if !slices.Contains(names, "extra") {
		t.Fatalf("pools after reload: %v", names)
	}
	// The new policy refuses unknown identities: an ANONYMOUS create now gets 300.
	c := gw.dialTCP(t)
	defer c.Close()
	m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := streamSession(c, m); err == nil {
		t.Fatal("session accepted under a policy that refuses unknown identities")
	}

	// A broken policy is refused as a whole and changes nothing.
	bad := next
	bad.Policy = auth.PolicyConfig{Unknown: "sometimes"}
	if _, err := gw.g.Reload(bad); err == nil {
		t.Fatal("invalid policy accepted")
	}
	// Removing a pool needs a restart and is not applied.
	fewer := next
	fewer.Pools = gw.cfg.Pools[:1]
	restart, err = gw.g.Reload(fewer)
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) == 0 || restart[0] != "pools (only additions at the end reload)" {
		t.Fatalf("restart needed = %v", restart)
	}
}

// TestReloadedPoolCarriesSessions: a pool added by a reload carries sessions at once: the data
// plane learns it with the lease manager (and, outside tests, its route is added).
func TestReloadedPoolCarriesSessions(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "alice@example.com")
	extra := netip.MustParsePrefix("10.77.0.0/24")
	next := gw.cfg
	next.Pools = append(slices.Clone(gw.cfg.Pools), config.Pool{Name: "extra", Prefixes: []netip.Prefix{extra}})
	next.Policy = auth.PolicyConfig{Default: auth.Rule{Pool: "extra"}}
	if _, err := gw.g.Reload(next); err != nil {
		t.Fatal(err)
	}
	tt := openTLSTunnelIn(t, gw, st, extra)
	good := tuntest.Ping(outside, tt.lease)
	tt.send(t, stream.AppendFrame(nil, good))
	if p := gw.fromGateway(t); !bytes.Equal(p, good) {
		t.Fatalf("gateway forwarded %x, want %x", p, good)
	}
}

// TestReloadAccessRules: a reload that adds access rules applies them to an established
// session at once (its ping is dropped and counted; the session stays), and one that removes
// them lets the same session through again.
func TestReloadAccessRules(t *testing.T) {
	gw := startGateway(t, nil)
	st := gw.enrollIdentity(t, "alice@example.com")
	pool := gw.cfg.Pools[0].Prefixes[0]
	tt := openTLSTunnelIn(t, gw, st, pool)
	ping := tuntest.Ping(outside, tt.lease)
	tt.send(t, stream.AppendFrame(nil, ping))
	if p := gw.fromGateway(t); !bytes.Equal(p, ping) {
		t.Fatalf("gateway forwarded %x, want %x", p, ping)
	}

	narrow := gw.cfg
	narrow.Policy = auth.PolicyConfig{Default: auth.Rule{Access: &acl.Access{Outbound: []acl.Rule{
		{To: []netip.Prefix{netip.PrefixFrom(outside, 32)}, Proto: acl.ProtoTCP, Ports: []acl.PortRange{{Lo: 80, Hi: 80}}},
	}}}}
	if _, err := gw.g.Reload(narrow); err != nil {
		t.Fatal(err)
	}
	tt.send(t, stream.AppendFrame(nil, ping))
	eventually(t, "the ping denied and counted", func() (bool, error) {
		return gw.g.Dataplane().Drops["denied_outbound"] == 1, nil
	})
	select {
	case p := <-gw.fromG:
		t.Fatalf("denied ping forwarded: %x", p)
	default:
	}
	if n := len(gw.g.Dataplane().Denied); n != 2 { // the default's block, both directions
		t.Fatalf("denied series %+v", gw.g.Dataplane().Denied)
	}

	if _, err := gw.g.Reload(gw.cfg); err != nil {
		t.Fatal(err)
	}
	tt.send(t, stream.AppendFrame(nil, ping))
	if p := gw.fromGateway(t); !bytes.Equal(p, ping) {
		t.Fatalf("after the rules were removed: gateway forwarded %x", p)
	}
}

// TestMemoryLimit: memory_limit is the process's soft memory limit while the gateway runs, a
// reload changes it, and the limit the process had before comes back when it is removed and
// when the gateway stops.
func TestMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	gw := startGateway(t, func(c *config.Config) { c.MemoryLimit = 512 << 20 })
	if got := debug.SetMemoryLimit(-1); got != 512<<20 {
		t.Fatalf("memory limit %d while running, want 512MiB", got)
	}
	next := gw.cfg
	next.MemoryLimit = 1 << 30
	restart, err := gw.g.Reload(next)
	if err != nil || len(restart) != 0 {
		t.Fatalf("reload: %v, restart %v", err, restart)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Fatalf("memory limit %d after the reload, want 1GiB", got)
	}
	next.MemoryLimit = 0
	if _, err := gw.g.Reload(next); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("memory limit %d with memory_limit removed, want the one at start, %d", got, before)
	}
	next.MemoryLimit = 768 << 20
	if _, err := gw.g.Reload(next); err != nil {
		t.Fatal(err)
	}
	gw.stop()
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("memory limit %d after the stop, want %d", got, before)
	}
}
