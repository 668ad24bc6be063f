package gateway_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/boltstore"
)

func TestZZStickyDebug(t *testing.T) {
	st, err := boltstore.OpenBolt(t.TempDir()+"/l.db", boltstore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := lease.New(lease.Config{
		Pools:        []lease.PoolConfig{{Name: "default", Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}, ExcludeNetworkBroadcast: true}},
		OfferTimeout: 30 * time.Second, Lifetime: time.Hour, HoldTime: 24 * time.Hour, MaxSessions: 1,
	}, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	for i, s := range []string{"s1", "s2", "s3"} {
		l, err := m.Offer(ctx, lease.Request{Identity: "alice", Session: s, Transport: "v4dtlsv6"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Accept(ctx, l.Addr, s); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- m.Release(ctx, l.Addr, s, lease.ReasonClosed) }()
		for {
			if g, ok := m.Get(l.Addr); ok && g.State == lease.StateHeld {
				break
			}
		}
		t.Logf("%d: %s", i, l.Addr)
		defer func() { <-done }()
	}
}
