package gateway_test

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/boltstore"
	"github.com/dstmgw/dstm/tsp"
)

// TestRevokeIdentityCounts: an identity-wide revocation closes the identity's two
// sessions (two certificates, so two revocation events that each close one session, and the
// admin call's own closeRevoked by identity): the answer counts each once, and does not
// count the session of another identity, which stays. A serial this CA never issued is
// refused and closes nothing.
func TestRevokeIdentityCounts(t *testing.T) {
	gw := startGateway(t, func(c *config.Config) { c.Leases.MaxSessions = 3 })
	ctx := testCtx(t)
	e1 := gw.enrollIdentity(t, "eve@example.com")
	e2 := gw.enrollIdentity(t, "eve@example.com")
	f := gw.enrollIdentity(t, "frank@example.com")
	t1 := openTLSTunnel(t, gw, e1)
	gw.waitLeaseState(t, t1.lease, "active")
	t2 := openTLSTunnel(t, gw, e2)
	gw.waitLeaseState(t, t2.lease, "active")
	tf := openTLSTunnel(t, gw, f)
	gw.waitLeaseState(t, tf.lease, "active")

	// A serial that is not ours (nor an identity).
	if res, err := gw.admin.Revoke(ctx, "0x7fffffffffffffffffff"); err == nil {
		t.Errorf("revoking a serial this CA never issued answered %+v, want an error", res)
	} else if !errors.Is(err, admin.ErrNotFound) {
		t.Logf("foreign serial: %v", err)
	}

	res, err := gw.admin.Revoke(ctx, "eve@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if res.Sessions != 2 || len(res.Serials) != 2 {
		t.Errorf("revoking eve answered %+v, want two serials and two sessions", res)
	}
	for _, c := range []net.Conn{t1.c, t2.c} {
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Error("an eve session was not closed")
				}
				break
			}
		}
	}
	if l := gw.waitLeaseState(t, tf.lease, "active"); l.Identity != "frank@example.com" {
		t.Errorf("frank's lease: %+v", l)
	}
}

// TestShutdownWritesHoldsUDP: a UDP TSP session live at the stop and a TCP session
// ended before it are both held in the lease file; calling stop twice is harmless.
func TestShutdownWritesHoldsUDP(t *testing.T) {
	gw := startGateway(t, nil)
	ctx := testCtx(t)
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
	if l := got[udpAddr]; l.State != lease.StateHeld || l.Identity != "127.1.0.9" {
		t.Errorf("UDP session's %v in the file: %+v, want held for 127.1.0.9", udpAddr, l)
	}
	if l := got[tcpAddr]; l.State != lease.StateHeld || l.Identity != "127.1.0.8" || !l.Expires.Equal(held.Expires) {
		t.Errorf("ended TCP session's %v in the file: %+v, want held for 127.1.0.8 until %v", tcpAddr, l, held.Expires)
	}
}
