package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/dstmgw/dstm/client"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/internal/netns"
)

// The cluster scenario's network: every namespace on one bridge (in a hub namespace) that
// carries one IPv6 /64 and one IPv4 /24. The IPv4 server routes the pool to the gateway of
// the client's session: the test plays the site router (announcing the leases by BGP is the
// routing issue's job).
// IPv6 fd00:d57e::/64: client ::2, gateways ::11 and ::12, etcd members ::21 to ::23; IPv4
// 198.51.100.0/24: server .2, gateways .11 and .12.
var (
	clusterClient = netip.MustParseAddr("fd00:d57e::2")
	clusterServer = netip.MustParseAddr("198.51.100.2")
)

const (
	clusterBridge = "dstmbr0"
	clusterLink   = "dstmx0" // every namespace's link to the bridge
	clusterTTL    = 2 * time.Second
	failoverRuns  = 5
)

type clusterGW struct {
	name    string
	ns      *netns.NS
	v6, v4  netip.Addr
	dir     string
	cfgPath string
	proc    *proc
	runs    int
}

func (g *clusterGW) addr() string { return netip.AddrPortFrom(g.v6, tspPort).String() }

type etcdMember struct {
	name string
	ns   *netns.NS
	v6   netip.Addr
	proc *proc
}

func (m *etcdMember) peerURL() string   { return "http://" + netip.AddrPortFrom(m.v6, 2380).String() }
func (m *etcdMember) clientURL() string { return "http://" + netip.AddrPortFrom(m.v6, 2379).String() }

type clusterEnv struct {
	t       *testing.T
	hub     *netns.NS
	client  *netns.NS
	server  *netns.NS
	dir     string
	srv     *servers
	gws     []*clusterGW
	members []*etcdMember
	cdir    string
	cproc   *proc
	etcd    *clientv3.Client // the test's own view of the store, from the client namespace
}

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	requireE2E(t)
	dir, err := os.MkdirTemp("", "dstm-e2e-cl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ce := &clusterEnv{t: t, dir: dir, cdir: filepath.Join(dir, "client")}
	ce.hub = netns.New(t, "h")
	if err := ce.hub.AddBridge(clusterBridge); err != nil {
		t.Fatal(err)
	}
	attach := func(role, hubName string, addrs ...netip.Prefix) *netns.NS {
		ns := netns.New(t, role)
		if err := netns.LinkVeth(ns, clusterLink, ce.hub, hubName); err != nil {
			t.Fatal(err)
		}
		if err := ce.hub.SetMaster(hubName, clusterBridge); err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if err := ns.AddAddr(clusterLink, a); err != nil {
				t.Fatal(err)
			}
		}
		return ns
	}
	ce.client = attach("c", "dstmhc", netip.PrefixFrom(clusterClient, 64))
	ce.server = attach("s", "dstmhs", netip.PrefixFrom(clusterServer, 24))
	for i := range 3 {
		v6 := netip.MustParseAddr(fmt.Sprintf("fd00:d57e::%x", 0x21+i))
		m := &etcdMember{name: fmt.Sprintf("m%d", i+1), v6: v6}
		m.ns = attach(fmt.Sprintf("e%d", i+1), fmt.Sprintf("dstmhe%d", i+1), netip.PrefixFrom(v6, 64))
		ce.members = append(ce.members, m)
	}
	for i := range 2 {
		g := &clusterGW{
			name: fmt.Sprintf("gw%d", i+1),
			v6:   netip.MustParseAddr(fmt.Sprintf("fd00:d57e::%x", 0x11+i)),
			v4:   netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", 11+i)),
			dir:  filepath.Join(dir, fmt.Sprintf("gw%d", i+1)),
		}
		g.ns = attach(fmt.Sprintf("g%d", i+1), fmt.Sprintf("dstmhg%d", i+1), netip.PrefixFrom(g.v6, 64), netip.PrefixFrom(g.v4, 24))
		if err := g.ns.SetSysctl("net/ipv4/ip_forward", "1"); err != nil {
			t.Fatal(err)
		}
		ce.gws = append(ce.gws, g)
	}
	if err := ce.server.AddRoute(netip.MustParsePrefix(poolPrefix), ce.gws[0].v4); err != nil {
		t.Fatal(err)
	}
	ce.srv = startServers(t, ce.server, clusterServer)
	ce.startEtcd()
	for _, g := range ce.gws {
		if err := os.MkdirAll(g.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		g.cfgPath = filepath.Join(g.dir, "gateway.yaml")
		if err := os.WriteFile(g.cfgPath, []byte(ce.config(g)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// One CA for the cluster: init on gw1, its keys copied to gw2 (docs/cluster.md).
	if out, err := ce.gwCmd(ce.gws[0], "init"); err != nil {
		t.Fatalf("dstm-gateway init: %v\n%s", err, out)
	}
	copyCAKeys(t, filepath.Join(ce.gws[0].dir, "state", "ca"), filepath.Join(ce.gws[1].dir, "state", "ca"))
	for _, g := range ce.gws {
		ce.startGateway(g)
	}
	return ce
}

// copyCAKeys copies a CA directory without its databases.
func copyCAKeys(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".db") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(to, e.Name()), b, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (ce *clusterEnv) endpoints() []string {
	var out []string
	for _, m := range ce.members {
		out = append(out, m.clientURL())
	}
	return out
}

func (ce *clusterEnv) config(g *clusterGW) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir: %s\n", filepath.Join(g.dir, "state"))
	fmt.Fprintf(&b, "listen:\n  addresses: [%q]\n", g.addr())
	fmt.Fprintf(&b, "tep:\n  ipv6: %s\n  inner_v4: %s\n  device: %s\n", g.v6, innerV4, gatewayTUN)
	fmt.Fprintf(&b, "pools:\n  - name: default\n    prefixes: [%s]\n", poolPrefix)
	fmt.Fprintf(&b, "ca:\n  server_names: [gw.e2e.test]\n  server_ips: [%s]\n", g.v6)
	b.WriteString("log:\n  level: debug\n  format: json\n")
	fmt.Fprintf(&b, "admin:\n  socket: %s\n", filepath.Join(g.dir, "admin.sock"))
	fmt.Fprintf(&b, "store:\n  etcd:\n    name: %s\n    ttl: %s\n    request_timeout: 1s\n    endpoints:\n", g.name, clusterTTL)
	for _, ep := range ce.endpoints() {
		fmt.Fprintf(&b, "      - %q\n", ep)
	}
	return b.String()
}

// startEtcd starts the three members and connects the test's own client to them.
func (ce *clusterEnv) startEtcd() {
	t := ce.t
	var initial []string
	for _, m := range ce.members {
		initial = append(initial, m.name+"="+m.peerURL())
	}
	for _, m := range ce.members {
		m.proc = startProc(t, "etcd "+m.name, m.ns, filepath.Join(ce.dir, "etcd-"+m.name+".log"), bins.etcd,
			"--name", m.name, "--data-dir", filepath.Join(ce.dir, "etcd-"+m.name),
			"--listen-peer-urls", m.peerURL(), "--initial-advertise-peer-urls", m.peerURL(),
			"--listen-client-urls", m.clientURL(), "--advertise-client-urls", m.clientURL(),
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "dstm-e2e", "--heartbeat-interval", "50", "--election-timeout", "500",
			"--unsafe-no-fsync", "--log-level", "warn")
	}
	dial := nsDialer(ce.client)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: ce.endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ce.etcd = cli
	eventually(t, 30*time.Second, "the etcd cluster", func() error {
		for _, m := range ce.members {
			if m.proc.exited() {
				t.Fatalf("etcd %s exited: %v", m.name, m.proc.err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "/dstm-e2e/ready", "1")
		return err
	})
}

func (ce *clusterEnv) gwCmd(g *clusterGW, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return output(exec.CommandContext(ctx, bins.gateway, append([]string{"-c", g.cfgPath}, args...)...))
}

func (ce *clusterEnv) startGateway(g *clusterGW) {
	ce.t.Helper()
	g.runs++
	g.proc = startProc(ce.t, fmt.Sprintf("%s#%d", g.name, g.runs), g.ns, filepath.Join(g.dir, fmt.Sprintf("run-%d.log", g.runs)),
		bins.gateway, "-c", g.cfgPath, "run")
	p := g.proc
	eventually(ce.t, 30*time.Second, g.name+"'s admin API", func() error {
		if p.exited() {
			ce.t.Fatalf("%s exited during start-up: %v", g.name, p.err)
		}
		_, err := ce.gwCmd(g, "status")
		return err
	})
}

func (ce *clusterEnv) kill(g *clusterGW) {
	ce.t.Helper()
	if err := g.proc.signal(syscall.SIGKILL); err != nil {
		ce.t.Fatal(err)
	}
	if _, timedOut := g.proc.waitExit(10 * time.Second); timedOut {
		ce.t.Fatalf("%s did not die from SIGKILL", g.name)
	}
}

func (ce *clusterEnv) clientCmd(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return output(ce.client.Command(ctx, bins.client, append([]string{"--state-dir", ce.cdir}, args...)...))
}

func (ce *clusterEnv) clientStatus() (client.Status, error) {
	var st client.Status
	out, err := ce.clientCmd("status", "--json")
	if err == nil {
		err = json.Unmarshal(out, &st)
	}
	return st, err
}

// up enrolls the client on gw1 and starts it with both gateways.
func (ce *clusterEnv) up() client.Status {
	t := ce.t
	out, err := ce.gwCmd(ce.gws[0], "token", identity, "--ttl", "10m", "--json")
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	var tok admin.TokenResult
	if err := json.Unmarshal(out, &tok); err != nil {
		t.Fatal(err)
	}
	if out, err := ce.clientCmd("enroll", "--gateway", ce.gws[0].addr(), "--token", tok.Token, "--fingerprint", tok.Fingerprint); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	ce.cproc = startProc(t, "client", ce.client, filepath.Join(ce.dir, "client.log"), bins.client,
		"--state-dir", ce.cdir, "--log-level", "debug", "up", "--gateway", ce.gws[0].addr()+","+ce.gws[1].addr(),
		"--device", clientTUN)
	return ce.waitUp(30*time.Second, time.Time{})
}

func (ce *clusterEnv) waitUp(timeout time.Duration, since time.Time) client.Status {
	ce.t.Helper()
	var st client.Status
	eventually(ce.t, timeout, "the client's tunnel", func() error {
		if ce.cproc.exited() {
			ce.t.Fatalf("dstm-client up exited: %v", ce.cproc.err)
		}
		var err error
		if st, err = ce.clientStatus(); err != nil {
			return err
		}
		if st.State != "up" || !st.Since.After(since) {
			return fmt.Errorf("client %q since %v (error %q)", st.State, st.Since, st.Error)
		}
		return nil
	})
	return st
}

// gatewayOf returns the gateway the client's status names.
func (ce *clusterEnv) gatewayOf(st client.Status) *clusterGW {
	for _, g := range ce.gws {
		if st.Gateway == g.addr() {
			return g
		}
	}
	ce.t.Fatalf("the client is on %q, not a gateway of the cluster", st.Gateway)
	return nil
}

func (ce *clusterEnv) other(g *clusterGW) *clusterGW {
	if g == ce.gws[0] {
		return ce.gws[1]
	}
	return ce.gws[0]
}

// fetch gets the server's page through the tunnel once.
func (ce *clusterEnv) fetch(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	body, err := get(ctx, httpIn(ce.client, timeout), ce.srv.base+"/")
	if err == nil && string(body) != page {
		err = fmt.Errorf("GET / = %q", body)
	}
	return err
}

// storeRecord is what the test reads of a lease record in etcd.
type storeRecord struct {
	Identity string `json:"identity"`
	Owner    string `json:"owner"`
	State    string `json:"state"`
}

// checkStore reads every lease record from etcd and checks that identity holds exactly one
// active lease, addr, owned by owner, and that no address of the store is active for a
// gateway whose session list does not have it.
func (ce *clusterEnv) checkStore(addr, owner string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := ce.etcd.Get(ctx, "/dstm/lease/a/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	var active []string
	for _, kv := range resp.Kvs {
		var r storeRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return fmt.Errorf("%s: %w", kv.Key, err)
		}
		a := strings.TrimPrefix(string(kv.Key), "/dstm/lease/a/")
		if r.State != "active" {
			continue
		}
		if r.Identity == identity {
			active = append(active, a+"@"+r.Owner)
		}
	}
	if want := []string{addr + "@" + owner}; !slices.Equal(active, want) {
		return fmt.Errorf("active leases of %s in etcd: %v, want %v", identity, active, want)
	}
	for _, g := range ce.gws {
		if g.proc.exited() {
			continue
		}
		out, err := ce.gwCmd(g, "sessions", "--json")
		if err != nil {
			return err
		}
		var ss []admin.Session
		if err := json.Unmarshal(out, &ss); err != nil {
			return err
		}
		for _, s := range ss {
			if s.Lease == addr && g.name != owner {
				return fmt.Errorf("%s still has a session with %s (owned by %s)", g.name, addr, owner)
			}
		}
	}
	return nil
}

// TestClusterFailover: two gateways on a real three-member etcd cluster (processes in
// namespaces). The client is killed away from its gateway (kill -9) again and again and comes
// back on the other one with the same IPv4 address, traffic flowing; then with one etcd member
// dead; then its gateway is cut off from etcd (it ends its session once its ownership lapses
// and the client moves); then a revocation on the other gateway closes the session. After
// every step the store has exactly one active lease for the client, owned by the gateway that
// serves it.
func TestClusterFailover(t *testing.T) {
	ce := newClusterEnv(t)
	st := ce.up()
	lease := st.Lease
	if err := ce.fetch(10 * time.Second); err != nil {
		t.Fatalf("traffic through %s: %v", st.Gateway, err)
	}
	cur := ce.gatewayOf(st)
	eventually(t, 10*time.Second, "the store", func() error { return ce.checkStore(lease, cur.name) })

	var times []time.Duration
	failover := func(what string) {
		t.Helper()
		next := ce.other(cur)
		killed := time.Now()
		ce.kill(cur)
		if err := ce.server.ReplaceRoute(netip.MustParsePrefix(poolPrefix), next.v4); err != nil {
			t.Fatal(err)
		}
		st := ce.waitUp(60*time.Second, killed)
		if err := poll(30*time.Second, 20*time.Millisecond, func() error { return ce.fetch(2 * time.Second) }); err != nil {
			t.Fatalf("%s: no traffic after the failover: %v", what, err)
		}
		d := time.Since(killed)
		times = append(times, d)
		if st.Lease != lease || ce.gatewayOf(st) != next {
			t.Fatalf("%s: the client is on %s with %s, want %s with %s", what, st.Gateway, st.Lease, next.addr(), lease)
		}
		eventually(t, 10*time.Second, "the store after "+what, func() error { return ce.checkStore(lease, next.name) })
		t.Logf("%s: kill -9 %s → traffic through %s with %s again: %v", what, cur.name, next.name, lease, d.Round(time.Millisecond))
		ce.startGateway(cur) // back in the cluster for the next round
		cur = next
	}
	for i := range failoverRuns {
		failover(fmt.Sprintf("failover %d", i+1))
	}
	slices.Sort(times)
	t.Logf("failover (kill -9 → traffic again, same IPv4), %d runs: median %v, max %v", len(times),
		times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))

	// One etcd member dies: the cluster goes on.
	ce.members[0].proc.kill()
	failover("with one etcd member dead")

	// The client's gateway is cut off from etcd: it ends the session once its ownership has
	// lapsed, answers new sessions with 530, and the client moves to the other gateway.
	cut := time.Now()
	for _, m := range ce.members {
		if err := cur.ns.Blackhole(netip.PrefixFrom(m.v6, 128)); err != nil {
			t.Fatal(err)
		}
	}
	next := ce.other(cur)
	eventually(t, 30*time.Second, "the client on the other gateway", func() error {
		st, err := ce.clientStatus()
		if err != nil {
			return err
		}
		if st.State != "up" || st.Gateway != next.addr() {
			return fmt.Errorf("client %s on %s", st.State, st.Gateway)
		}
		if st.Lease != lease {
			t.Fatalf("after the partition the client has %s, want %s", st.Lease, lease)
		}
		return nil
	})
	if err := ce.server.ReplaceRoute(netip.MustParsePrefix(poolPrefix), next.v4); err != nil {
		t.Fatal(err)
	}
	if err := poll(30*time.Second, 20*time.Millisecond, func() error { return ce.fetch(2 * time.Second) }); err != nil {
		t.Fatalf("no traffic after the partition: %v", err)
	}
	t.Logf("partition of %s from etcd → traffic through %s with %s again: %v", cur.name, next.name, lease, time.Since(cut).Round(time.Millisecond))
	eventually(t, 10*time.Second, "the store after the partition", func() error { return ce.checkStore(lease, next.name) })
	for _, m := range ce.members {
		if err := cur.ns.Unblackhole(netip.PrefixFrom(m.v6, 128)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, cur.name+" owner again after the partition", func() error {
		out, err := ce.gwCmd(cur, "status", "--json")
		if err != nil {
			return err
		}
		var s admin.Status
		if err := json.Unmarshal(out, &s); err != nil {
			return err
		}
		if s.Cluster == nil || !s.Cluster.Owner {
			return fmt.Errorf("%s status %+v", cur.name, s.Cluster)
		}
		return nil
	})
	cur = next

	// A revocation on the other gateway closes the session on this one within a second.
	if out, err := ce.gwCmd(ce.other(cur), "revoke", identity); err != nil {
		t.Fatalf("revoke on %s: %v\n%s", ce.other(cur).name, err, out)
	}
	revoked := time.Now()
	err := poll(5*time.Second, 10*time.Millisecond, func() error {
		out, err := ce.gwCmd(cur, "sessions", "--json")
		if err != nil {
			return err
		}
		var ss []admin.Session
		if err := json.Unmarshal(out, &ss); err != nil {
			return err
		}
		for _, s := range ss {
			if s.Identity == identity {
				return fmt.Errorf("session %s still on %s", s.ID, cur.name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(revoked)
	t.Logf("revoke on %s → session gone from %s: %v", ce.other(cur).name, cur.name, d.Round(time.Millisecond))
	if d > time.Second {
		t.Errorf("the revocation took %v to close the session on the other gateway, want within 1 s", d)
	}
}
