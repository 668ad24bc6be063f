package gateway_test

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/certs/certstest"
	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
	"github.com/dstmgw/dstm/tsp"
)

// clusterMember returns the mutation that puts a test gateway in cluster c as name.
func clusterMember(c *etcdtest.Cluster, name string) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Store.Etcd = &config.Etcd{Endpoints: c.Endpoints(), Name: name, TTL: config.Duration(2 * time.Second)}
	}
}

// startSecondGateway starts another member of a's cluster, with a copy of a's CA; the
// check that nothing leaked is a's, when both have stopped.
func startSecondGateway(t *testing.T, a *testGW, c *etcdtest.Cluster, name string) *testGW {
	t.Helper()
	dir := copyCADir(t, a.cfg.StateDir)
	return startGatewayLeakCheck(t, func(cfg *config.Config) {
		clusterMember(c, name)(cfg)
		cfg.StateDir = dir
	}, zerolog.Nop(), false)
}

// anonymousSession opens a plain-TSP ANONYMOUS session on gw and returns its connection
// (the session lives while it is open) and offer.
func anonymousSession(t *testing.T, gw *testGW) (net.Conn, *tsp.Tunnel) {
	t.Helper()
	c := gw.dialTCP(t)
	m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := streamSession(c, m); err != nil {
		t.Fatalf("session: %v", err)
	}
	return c, m.Offer()
}

// TestClusterSameAddressOnAnotherGateway: two gateways share their leases through etcd; a
// client's lease on one is seen by the other, which names its owner; when the first stops,
// the client gets the same address from the second.
func TestClusterSameAddressOnAnotherGateway(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := startGateway(t, clusterMember(c, "gw-a"))
	b := startSecondGateway(t, a, c, "gw-b")
	ctx := testCtx(t)

	conn, o := anonymousSession(t, a)
	x := o.Client.IPv4
	a.waitLeaseState(t, x, "active")
	eventually(t, "gw-b sees the lease of gw-a's session", func() (bool, error) {
		l, ok, err := b.leaseOf(ctx, x)
		return ok && l.State == "active" && l.Gateway == "gw-a", err
	})
	var st admin.Status
	eventually(t, "both members in gw-b's status", func() (bool, error) {
		var err error
		st, err = b.admin.Status(ctx)
		return err == nil && st.Cluster != nil && len(st.Cluster.Members) == 2, err
	})
	if cl := st.Cluster; cl.Node != "gw-b" || !cl.Owner || cl.Members[0].Name != "gw-a" || cl.Members[1].Name != "gw-b" {
		t.Fatalf("cluster status %+v", cl)
	}

	conn.Close()
	a.stop()
	eventually(t, "the address held on gw-b after gw-a stopped", func() (bool, error) {
		l, ok, err := b.leaseOf(ctx, x)
		return ok && l.State == "held" && l.Gateway == "", err
	})
	eventually(t, "gw-a gone from the members", func() (bool, error) {
		st, err := b.admin.Status(ctx)
		return err == nil && len(st.Cluster.Members) == 1, err
	})
	conn2, o2 := anonymousSession(t, b)
	defer conn2.Close()
	if o2.Client.IPv4 != x {
		t.Fatalf("on gw-b the client got %v, want its address %v", o2.Client.IPv4, x)
	}
	l := b.waitLeaseState(t, x, "active")
	if l.Gateway != "gw-b" {
		t.Fatalf("lease %+v, want owner gw-b", l)
	}
}

// TestClusterEtcdDown: with etcd gone, a live session goes on until the gateway's ownership
// can have lapsed and is ended then; a new session is refused with "server too busy" (a
// client tries another gateway) and the gateway keeps running; it says so in status.
func TestClusterEtcdDown(t *testing.T) {
	c := etcdtest.Start(t, 1)
	gw := startGateway(t, func(cfg *config.Config) {
		clusterMember(c, "gw-a")(cfg)
		cfg.Store.Etcd.RequestTimeout = config.Duration(500 * time.Millisecond)
	})
	ctx := testCtx(t)
	// A session made before etcd goes stays while the ownership can still hold.
	live, o := anonymousSession(t, gw)
	defer live.Close()
	gw.waitLeaseState(t, o.Client.IPv4, "active")
	if st, err := gw.admin.Status(ctx); err != nil || st.Sessions != 1 {
		t.Fatalf("before etcd went: %d sessions, %v; want the live one", st.Sessions, err)
	}
	stopping := time.Now()
	c.Stop(0)
	stopped := time.Now()
	// While the ownership still holds, the session goes on. The last keep-alive was at most a
	// third of the TTL (2s) before stopping began, so the ownership holds for at least 1.3 s
	// after it: a status read within 1 s must show the live session. (Stopping the member
	// can take longer on a loaded machine: then the check is skipped.)
	st, err := gw.admin.Status(ctx)
	switch took := time.Since(stopping); {
	case err != nil:
		t.Fatal(err)
	case took < time.Second && st.Sessions != 1:
		t.Fatalf("%v after etcd went, within its ownership: %d sessions; want the live one", took, st.Sessions)
	case took >= time.Second:
		t.Logf("stopping the etcd member and reading the status took %v: the live-session check is skipped", took)
	}
	eventually(t, "the session ended once the ownership lapsed", func() (bool, error) {
		ss, err := gw.admin.Sessions(ctx)
		return err == nil && len(ss) == 0, err
	})
	// Stop returns after the member stopped serving; the ownership lapses within the TTL of
	// the last keep-alive before that.
	if d := time.Since(stopped); d > 2*time.Second+500*time.Millisecond {
		t.Errorf("the session outlived the ownership TTL (2s): ended %v after etcd went", d)
	}
	conn := gw.dialTCP(t)
	defer conn.Close()
	m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	_, err = streamSession(conn, m)
	if err == nil || !strings.Contains(err.Error(), "530") {
		t.Fatalf("session with etcd down: %v, want TSP 530 (server too busy)", err)
	}
	eventually(t, "status reports the ownership lost", func() (bool, error) {
		st, err := gw.admin.Status(ctx)
		return err == nil && st.Cluster != nil && !st.Cluster.Owner && st.Cluster.Error != "", err
	})
}

// copyCADir copies a gateway's CA keys into a new state directory and returns it.
func copyCADir(t *testing.T, stateDir string) string {
	t.Helper()
	to := t.TempDir()
	certstest.CopyKeys(t, filepath.Join(stateDir, gateway.CADir), filepath.Join(to, gateway.CADir))
	return to
}

// TestClusterRevocationEverywhere: a user enrolled on one gateway connects to another (one
// CA, state in etcd); revoking the user on the first closes the session on the second, and
// the certificate is refused there from then on.
func TestClusterRevocationEverywhere(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := startGateway(t, clusterMember(c, "gw-a"))
	b := startSecondGateway(t, a, c, "gw-b")
	ctx := testCtx(t)
	st := a.enrollIdentity(t, "dora@example.com")
	tun := openTLSTunnel(t, b, st)
	eventually(t, "gw-a sees dora's lease on gw-b", func() (bool, error) {
		l, ok, err := a.leaseOf(ctx, tun.lease)
		return ok && l.Gateway == "gw-b" && l.State == "active", err
	})

	start := time.Now()
	res, err := a.admin.Revoke(ctx, "dora@example.com")
	if err != nil || len(res.Serials) != 1 {
		t.Fatalf("revoke on gw-a: %+v %v", res, err)
	}
	_ = tun.c.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4096)
	for {
		if _, err := tun.c.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("dora's session on gw-b was not closed")
			}
			break
		}
	}
	t.Logf("revocation on gw-a closed the session on gw-b after %v", time.Since(start))
	if c2, err := b.dialTLS(ctx, st, nil); err == nil {
		defer c2.Close()
		_ = c2.SetReadDeadline(time.Now().Add(waitTimeout))
		_, _ = c2.Write([]byte("VERSION=2.0.2\r\n"))
		var ne net.Error
		if _, err := c2.Read(buf); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("gw-b did not refuse the revoked certificate: %v", err)
		}
	}
}

// TestClusterPoolsDiffer: a member whose pools are not the others' is named in status (a
// client moving between the two would not keep its address).
func TestClusterPoolsDiffer(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a := startGateway(t, clusterMember(c, "gw-a"))
	dir := copyCADir(t, a.cfg.StateDir)
	b := startGatewayLeakCheck(t, func(cfg *config.Config) {
		clusterMember(c, "gw-b")(cfg)
		cfg.StateDir = dir
		cfg.Pools[0].Prefixes = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/17")}
	}, zerolog.Nop(), false)
	st, err := b.admin.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster == nil || len(st.Cluster.Warnings) != 1 || !strings.Contains(st.Cluster.Warnings[0], "gw-a") {
		t.Fatalf("cluster status %+v, want a warning naming gw-a", st.Cluster)
	}
	if st, err := a.admin.Status(testCtx(t)); err != nil || len(st.Cluster.Warnings) != 1 || !strings.Contains(st.Cluster.Warnings[0], "gw-b") {
		t.Fatalf("gw-a's cluster status %+v, %v; want a warning naming gw-b", st.Cluster, err)
	}
}
