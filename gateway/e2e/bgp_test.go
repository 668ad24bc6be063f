package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/internal/netns"
)

// bird is a BIRD 2 daemon (Debian's bird2) run by a test as the site router.
type bird struct {
	ns   *netns.NS
	sock string
	proc *proc
}

// birdPeer is one BGP session of the router: a gateway.
type birdPeer struct {
	name     string
	addr     string // the gateway's address
	localAS  uint32
	remoteAS uint32
	export   bool   // send the gateway the router's routes (a static one): it must keep none
	password string // TCP MD5 (RFC 2385); "": none
}

// bgpPassword protects the single-node scenario's BGP session.
const bgpPassword = "dstm-e2e-md5"

// startBird runs BIRD in ns with router id id, one BGP session per peer, importing what the
// gateways announce into the namespace's kernel table (and exporting nothing to them).
func startBird(t *testing.T, ns *netns.NS, dir, id string, peers ...birdPeer) *bird {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatal("BIRD 2 is needed as the site router: apt-get install bird2 (.ci/run installs it)")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nprotocol device { scan time 1; }\n", id)
	b.WriteString("protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; learn off; }\n")
	b.WriteString("protocol static { ipv4; route 203.0.113.0/24 blackhole; }\n")
	for _, p := range peers {
		export := "none"
		if p.export {
			export = "all"
		}
		pw := ""
		if p.password != "" {
			pw = fmt.Sprintf("  password %q;\n", p.password)
		}
		fmt.Fprintf(&b, "protocol bgp dstm_%s {\n  local as %d;\n  neighbor %s as %d;\n%s  hold time 9;\n  connect retry time 1;\n  error wait time 1, 5;\n  graceful restart on;\n  ipv4 { import all; export %s; };\n}\n",
			p.name, p.localAS, p.addr, p.remoteAS, pw, export)
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	br := &bird{ns: ns, sock: filepath.Join(dir, "bird.ctl")}
	br.proc = startProc(t, "bird", ns, filepath.Join(dir, "bird.log"), "bird", "-f", "-c", conf, "-s", br.sock, "-P", filepath.Join(dir, "bird.pid"))
	eventually(t, 10*time.Second, "BIRD's control socket", func() error {
		if br.proc.exited() {
			t.Fatalf("bird exited: %v", br.proc.err)
		}
		_, err := br.cmd("show", "status")
		return err
	})
	return br
}

func (br *bird) cmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := output(exec.CommandContext(ctx, "birdc", append([]string{"-s", br.sock}, args...)...))
	return string(out), err
}

// kernelRoute returns the namespace's kernel route to prefix (as `ip route show` prints it),
// "" if none.
func kernelRoute(ns *netns.NS, prefix string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := output(ns.Command(ctx, "ip", "-4", "route", "show", "exact", prefix))
	return strings.TrimSpace(string(out)), err
}

// TestBGPAnnouncesPools: the IPv4 server's only route to the pool is the one the gateway
// announced to BIRD (the site router, in the server's namespace, over a session with a TCP MD5
// password); traffic flows through it.
// A kill -9 and a restart keep the route (graceful restart); a stop withdraws it.
func TestBGPAnnouncesPools(t *testing.T) {
	e := newEnv(t, gwOptions{bgp: true, prepare: func(e *env) {
		if err := os.WriteFile(filepath.Join(e.dir, "bgp-password"), []byte(bgpPassword+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}})
	br := startBird(t, e.tp.Server, e.dir, e.tp.ServerV4.String(),
		birdPeer{name: "gw", addr: e.tp.GatewayV4.String(), localAS: 65000, remoteAS: 65010, export: true, password: bgpPassword})
	started := time.Now()
	var route string
	eventually(t, 30*time.Second, "the pool's route learned by BGP", func() error {
		var err error
		if route, err = kernelRoute(e.tp.Server, poolPrefix); err == nil && !strings.Contains(route, "via "+e.tp.GatewayV4.String()) {
			err = fmt.Errorf("route %q", route)
		}
		return err
	})
	t.Logf("server's route, %v after BIRD started: %s", time.Since(started).Round(time.Millisecond), route)
	out, err := e.gwCmd("status")
	if err != nil || !strings.Contains(string(out), "announcing pools, 1 prefixes") || !strings.Contains(string(out), "established") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	// The router sends its own route; the gateway keeps none of it.
	eventually(t, 10*time.Second, "the router's route received and refused", func() error {
		var st admin.Status
		out, err := e.gwCmd("status", "--json")
		if err == nil {
			err = json.Unmarshal(out, &st)
		}
		if err != nil {
			return err
		}
		if st.BGP == nil || len(st.BGP.Neighbors) != 1 || st.BGP.Neighbors[0].Received == 0 || st.BGP.Neighbors[0].Kept != 0 {
			return fmt.Errorf("bgp status %+v", st.BGP)
		}
		return nil
	})
	e.up("dtls")
	e.checkTraffic(1<<20, 1<<20)

	// A crash and a restart do not flap the route: BIRD keeps it through graceful restart
	// while the gateway is away, and the restarted gateway announces it again.
	killed := time.Now()
	e.gw.killHard(t)
	consistently(t, 2*time.Second, "the route while the gateway is down (graceful restart)", func() error {
		r, err := kernelRoute(e.tp.Server, poolPrefix)
		if err == nil && r == "" {
			err = fmt.Errorf("the route to the pool is gone")
		}
		return err
	})
	e.startGateway()
	e.waitClientUp(60*time.Second, killed)
	e.checkTraffic(1<<20, 1<<20)
	eventually(t, 30*time.Second, "the BGP session again after the restart", func() error {
		out, err := br.cmd("show", "protocols", "dstm_gw")
		if err == nil && !strings.Contains(out, "Established") {
			err = fmt.Errorf("BIRD: %s", out)
		}
		return err
	})

	if err := e.gw.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the route withdrawn when the gateway stops", func() error {
		r, err := kernelRoute(e.tp.Server, poolPrefix)
		if err == nil && r != "" {
			err = fmt.Errorf("route still there: %q", r)
		}
		return err
	})
	if out, err := br.cmd("show", "route"); err == nil {
		t.Logf("BIRD after the stop:\n%s", out)
	}
}
