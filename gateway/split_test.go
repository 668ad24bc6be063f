package gateway_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
	"github.com/dstmgw/dstm/tsp"
)

// TestSplitNodesInProcess: a control node and a TEP node of one cluster, in process. The
// control node lists the TEP; a SIGHUP reload works on both (a control node has no TEP to
// hand the access rules to); the TEP node refuses what only a control node does and says so;
// the control node answers a session with no TEP for its tunnel type with 530.
func TestSplitNodesInProcess(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctl := startGateway(t, func(cfg *config.Config) {
		clusterMember(c, "ctl")(cfg)
		cfg.Roles = []string{config.RoleControl}
	})
	tep := startGatewayLeakCheck(t, func(cfg *config.Config) {
		clusterMember(c, "tep1")(cfg)
		cfg.StateDir = copyCADir(t, ctl.cfg.StateDir)
		cfg.Roles = []string{config.RoleTEP}
		cfg.TEP.IPv6 = netip.MustParseAddr("2001:db8::12")
		cfg.TEP.InnerV4 = netip.MustParseAddr("192.0.2.12") // outside the pools
	}, zerolog.Nop(), false)
	ctx := testCtx(t)

	eventually(t, "the TEP in the control node's status", func() (bool, error) {
		st, err := ctl.admin.Status(ctx)
		return err == nil && len(st.TEPs) == 1 && st.TEPs[0].Name == "tep1" && st.TEPs[0].IPv6 == "2001:db8::12", err
	})
	st, err := tep.admin.Status(ctx)
	if err != nil || strings.Join(st.Roles, ",") != "tep" || st.Cluster == nil || !st.Cluster.Owner {
		t.Fatalf("TEP node status %+v, %v", st, err)
	}
	if _, err := tep.admin.Leases(ctx); err == nil || !strings.Contains(err.Error(), "ask a control node") {
		t.Errorf("leases on the TEP node: %v, want a pointer to a control node", err)
	}
	for _, gw := range []*testGW{ctl, tep} {
		if _, err := gw.g.Reload(gw.cfg); err != nil {
			t.Errorf("reload: %v", err)
		}
	}
	// The TEP serves neither DTLS (no UDP port in this test's announcement: port 0) nor
	// v4v6: a DTLS session gets 530, and the gateway goes on.
	conn := ctl.dialTCP(t)
	defer conn.Close()
	m := anonymousClient(t, tsp.TransportTCP, tsp.TypeV4DTLSV6, tsp.TypeV4DTLSV6)
	if _, err := streamSession(conn, m); err == nil || !strings.Contains(err.Error(), "530") {
		t.Fatalf("a session with no TEP for it: %v, want TSP 530", err)
	}
	if _, err := ctl.admin.Status(ctx); err != nil {
		t.Fatalf("the control node after the refusal: %v", err)
	}
}
