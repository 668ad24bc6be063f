package gateway_test

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/certs"
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
	hold := gw.waitLeaseState(t, endedAddr, "held").Expires

	gw.stop()
	got := gw.leaseFile(t)
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

// TestShutdownWritesHoldsUDP: a UDP TSP session live at the stop and a TCP session
// ended before it are both held in the lease file; calling stop twice is harmless.
func TestShutdownWritesHoldsUDP(t *testing.T) {
	gw := startGateway(t, nil)
	u, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.1.0.9")}, gw.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_ = u.SetDeadline(time.Now().Add(waitTimeout))
	mu := anonymousClient(t, tsp.TransportUDP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := udpSession(u, mu); err != nil {
		t.Fatal(err)
	}
	udpAddr := mu.Offer().Client.IPv4
	gw.waitLeaseState(t, udpAddr, "active")

	d := net.Dialer{Timeout: waitTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.1.0.8")}}
	c, err := d.Dial("tcp", gw.tcp)
	if err != nil {
		t.Fatal(err)
	}
	mt := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := streamSession(c, mt); err != nil {
		t.Fatal(err)
	}
	tcpAddr := mt.Offer().Client.IPv4
	c.Close()
	held := gw.waitLeaseState(t, tcpAddr, "held")

	gw.stop()
	gw.stop()
	got := gw.leaseFile(t)
	if l := got[udpAddr]; l.State != lease.StateHeld || l.Identity != "127.1.0.9" {
		t.Errorf("UDP session's %v in the file: %+v, want held for 127.1.0.9", udpAddr, l)
	}
	if l := got[tcpAddr]; l.State != lease.StateHeld || l.Identity != "127.1.0.8" || !l.Expires.Equal(held.Expires) {
		t.Errorf("ended TCP session's %v in the file: %+v, want held for 127.1.0.8 until %v", tcpAddr, l, held.Expires)
	}
}

// leaseFile reads the lease file of the stopped gateway.
func (gw *testGW) leaseFile(t *testing.T) map[netip.Addr]lease.Lease {
	t.Helper()
	st, err := boltstore.OpenBolt(filepath.Join(gw.cfg.StateDir, gateway.LeaseFile), boltstore.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snap, err := st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[netip.Addr]lease.Lease{}
	for _, r := range snap.Leases {
		got[r.Lease.Addr] = r.Lease
	}
	return got
}

// TestFailedStartLeavesNothingOpen: a start that fails late (the admin socket is held by
// another gateway) returns its error and closes the sockets and devices it had opened.
func TestFailedStartLeavesNothingOpen(t *testing.T) {
	first := startGateway(t, nil)
	cfg := first.cfg
	cfg.StateDir = t.TempDir()
	ca, err := certs.Init(filepath.Join(cfg.StateDir, gateway.CADir), gateway.CAOptions(cfg, zerolog.Nop(), time.Now))
	if err != nil {
		t.Fatal(err)
	}
	ca.Close()
	baseline := openFDs(t)
	g, err := gateway.New(cfg, zerolog.Nop(), gateway.Options{Version: "test", Device: tuntest.NewChannelTUN().TUN()})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- g.Run(context.Background()) }()
	select {
	case err := <-runErr:
		if err == nil || !strings.Contains(err.Error(), "admin socket") {
			t.Fatalf("Run = %v, want the admin socket's error", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not fail with the admin socket held")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	checkFDs(t, baseline)
}
