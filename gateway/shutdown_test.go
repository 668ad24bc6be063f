package gateway_test

import (
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/boltstore"
	"github.com/dstmgw/dstm/tsp"
)

// TestShutdownWritesHolds: after a graceful stop the lease file has every lease held for its
// identity with the hold time the gateway gave it: that of a session that ended while the
// gateway ran (whose release the lease store kept in memory) and that of a session still
// live at the stop. A start after a crash would hold the first one again from its own time.
func TestShutdownWritesHolds(t *testing.T) {
	gw := startGateway(t, nil)
	ctx := testCtx(t)
	// ANONYMOUS identities are the client's address: one per session.
	session := func(local netip.Addr) (net.Conn, netip.Addr) {
		t.Helper()
		d := net.Dialer{Timeout: waitTimeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))}
		c, err := d.Dial("tcp", gw.tcp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
		if _, err := streamSession(c, m); err != nil || m.State() != tsp.ClientEstablished {
			t.Fatalf("session from %v: %v (state %v)", local, err, m.State())
		}
		return c, m.Offer().Client.IPv4
	}
	ended, endedAddr := session(netip.MustParseAddr("127.1.0.1"))
	_, liveAddr := session(netip.MustParseAddr("127.1.0.2"))
	ended.Close()
	var hold time.Time
	eventually(t, "the ended session's lease held", func() (bool, error) {
		ls, err := gw.admin.Leases(ctx)
		for _, l := range ls {
			if l.Addr == endedAddr.String() && l.State == lease.StateHeld.String() {
				hold = l.Expires
				return true, nil
			}
		}
		return false, err
	})

	gw.stop()
	st, err := boltstore.OpenBolt(filepath.Join(gw.cfg.StateDir, gateway.LeaseFile), boltstore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snap, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]lease.Lease{}
	for _, r := range snap.Leases {
		got[r.Lease.Addr] = r.Lease
	}
	for _, tc := range []struct {
		name     string
		addr     netip.Addr
		identity string
	}{{"ended", endedAddr, "127.1.0.1"}, {"live at the stop", liveAddr, "127.1.0.2"}} {
		l, ok := got[tc.addr]
		if !ok || l.State != lease.StateHeld || l.Identity != tc.identity {
			t.Errorf("%s session's %v in the lease file: %+v %v, want held for %s", tc.name, tc.addr, l, ok, tc.identity)
		}
	}
	if l := got[endedAddr]; !l.Expires.Equal(hold) {
		t.Errorf("the ended session's hold ends %v in the file, %v in the gateway", l.Expires, hold)
	}
}
