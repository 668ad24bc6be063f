package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/plain"
)

// splitRuns is how many TEP kills TestSplitRoles measures.
const splitRuns = 4

// upSplit enrolls c on the control node and starts it there with transport; c.gw becomes the
// TEP node its session is bound to.
func (ce *clusterEnv) upSplit(c *clusterClient, transport string) {
	t := ce.t
	ctl := ce.gws[0]
	out, err := ce.gwCmd(ctl, "token", c.identity, "--ttl", "10m", "--json")
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	var tok admin.TokenResult
	if err := json.Unmarshal(out, &tok); err != nil {
		t.Fatal(err)
	}
	if out, err := ce.clientCmd(c, "enroll", "--gateway", ctl.addr(), "--token", tok.Token, "--fingerprint", tok.Fingerprint); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	c.proc = startProc(t, c.name, c.ns, filepath.Join(ce.dir, c.name+".log"), bins.client,
		"--state-dir", c.dir, "--log-level", "debug", "up", "--gateway", ctl.addr(), "--transport", transport, "--dns", "off",
		"--device", clientTUN)
	st := ce.waitUp(c, 30*time.Second, time.Time{})
	c.lease = st.Lease
	c.gw = ce.tepOf(c)
	ce.routed(c)
}

// tepOf returns the TEP node of c's session, as the control node says and the TEP confirms.
func (ce *clusterEnv) tepOf(c *clusterClient) *clusterGW {
	ce.t.Helper()
	var tep *clusterGW
	eventually(ce.t, 10*time.Second, c.name+"'s TEP", func() error {
		ss, err := ce.sessions(ce.gws[0])
		if err != nil {
			return err
		}
		for _, s := range ss {
			if s.Identity != c.identity || s.Lease != c.lease {
				continue
			}
			for _, g := range ce.gws[1:] {
				if g.name != s.TEP {
					continue
				}
				on, err := ce.sessions(g)
				if err != nil {
					return err
				}
				if !slices.ContainsFunc(on, func(x admin.Session) bool { return x.ID == s.ID && x.Lease == c.lease }) {
					return fmt.Errorf("session %s is not on %s (%+v)", s.ID, g.name, on)
				}
				tep = g
				return nil
			}
			return fmt.Errorf("session %s names TEP %q", s.ID, s.TEP)
		}
		return fmt.Errorf("no session of %s with %s on the control node", c.identity, c.lease)
	})
	return tep
}

// movedSplit waits until every client of the dead TEP is up again since t0 with its address,
// bound to a live TEP that the server's route now leads to, and checks everyone's traffic.
func (ce *clusterEnv) movedSplit(dead *clusterGW, t0 time.Time, what string) {
	t := ce.t
	t.Helper()
	for _, c := range ce.clients {
		if c.gw != dead {
			continue
		}
		st := ce.waitUp(c, 60*time.Second, t0)
		if st.Lease != c.lease {
			t.Fatalf("%s: %s came back with %s, want %s", what, c.name, st.Lease, c.lease)
		}
		c.gw = ce.tepOf(c)
		if c.gw == dead {
			t.Fatalf("%s: %s is bound to the dead %s", what, c.name, dead.name)
		}
		ce.routed(c)
	}
	for _, c := range ce.clients {
		if err := poll(30*time.Second, 20*time.Millisecond, func() error { return ce.fetch(c, 2*time.Second) }); err != nil {
			t.Fatalf("%s: no traffic for %s: %v", what, c.name, err)
		}
	}
}

// bindings reads the session bindings in etcd: TEP/lease → identity.
func (ce *clusterEnv) bindings() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := ce.etcd.Get(ctx, "/dstm/bind/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		var b struct {
			Identity string `json:"identity"`
		}
		if err := json.Unmarshal(kv.Value, &b); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), "/dstm/bind/")] = b.Identity
	}
	return out, nil
}

// TestSplitRoles: one control node and two TEP nodes on a three-member etcd, BIRD as the
// site router. A DTLS client and a plain v4v6 client (which tunnels to whatever address the
// offer names, as gogoc does) speak TSP to the control node and land on different TEPs, which
// announce their /32s. A TEP is killed (kill -9) mid-download again and again: its clients
// come back through the other TEP with the same IPv4 address and the download completes. A
// revocation on the control node tears the session down on its TEP within a second.
func TestSplitRoles(t *testing.T) {
	ce := newClusterEnvWith(t, true)
	ctl := ce.gws[0]
	eventually(t, 10*time.Second, "both TEPs in the control node's directory", func() error {
		st, err := ce.status(ctl)
		if err == nil && len(st.TEPs) != 2 {
			err = fmt.Errorf("TEPs %+v", st.TEPs)
		}
		return err
	})
	alice, bob := ce.clients[0], ce.clients[1]
	ce.upSplit(alice, "dtls")
	ce.upSplit(bob, "plain")
	if alice.gw == bob.gw {
		t.Fatalf("both clients on %s: the control node did not pick the least loaded TEP", alice.gw.name)
	}
	for _, c := range ce.clients {
		if err := ce.fetch(c, 10*time.Second); err != nil {
			t.Fatalf("traffic of %s through %s: %v", c.name, c.gw.name, err)
		}
		st, err := ce.clientStatus(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s over %s, TSP with %s, data through %s", c.name, c.lease, st.Transport, ctl.name, c.gw.name)
	}
	bs, err := ce.bindings()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ce.clients {
		if bs[c.gw.name+"/"+c.lease] != c.identity {
			t.Fatalf("bindings in etcd %v: none for %s on %s", bs, c.lease, c.gw.name)
		}
	}

	ce.gogoc(bob)

	var times []time.Duration
	for i := range splitRuns {
		// Kill the TEP of alice (DTLS) and of bob (plain v4v6) in turn.
		victim := []*clusterClient{alice, bob}[i%2]
		dead := victim.gw
		ce.settle()
		const size = 64 << 20
		got, done := ce.startDownload(victim, size, 2<<20, fmt.Sprintf("run %d", i+1))
		killed := time.Now()
		atKill := got.Load()
		dead.proc.killHard(t)
		ce.movedSplit(dead, killed, fmt.Sprintf("TEP kill %d", i+1))
		d := time.Since(killed)
		times = append(times, d)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: the download across the move: %v", i+1, err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatalf("run %d: the download did not end", i+1)
		}
		if atKill >= size {
			t.Fatalf("run %d: the download ended before the kill", i+1)
		}
		st, _ := ce.clientStatus(victim)
		t.Logf("run %d: kill -9 %s %d MB into %s's %d MB download (%s) → traffic through %s, same address: %v; the download completed",
			i+1, dead.name, atKill>>20, victim.name, size>>20, st.Transport, victim.gw.name, d.Round(time.Millisecond))
		ce.startGateway(dead)
		eventually(t, 10*time.Second, dead.name+" back in the directory", func() error {
			st, err := ce.status(ctl)
			if err == nil && len(st.TEPs) != 2 {
				err = fmt.Errorf("TEPs %+v", st.TEPs)
			}
			return err
		})
	}
	slices.Sort(times)
	t.Logf("TEP kill -9 → traffic again through the other TEP (same IPv4; store.etcd.ttl %v), %d runs: median %v, max %v",
		clusterTTL, len(times), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))

	// A revocation on the control node: the session goes from its TEP within a second.
	tep := alice.gw
	if out, err := ce.gwCmd(ctl, "revoke", alice.identity); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	revoked := time.Now()
	if err := poll(5*time.Second, 10*time.Millisecond, func() error {
		ss, err := ce.sessions(tep)
		if err != nil {
			return err
		}
		for _, s := range ss {
			if s.Identity == alice.identity {
				return fmt.Errorf("session %s still on %s", s.ID, tep.name)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d := time.Since(revoked)
	t.Logf("revoke on %s → session gone from %s: %v", ctl.name, tep.name, d.Round(time.Millisecond))
	if d > time.Second {
		t.Errorf("the revocation took %v to reach the TEP, want within 1 s", d)
	}
	if err := ce.fetch(bob, 5*time.Second); err != nil {
		t.Errorf("bob's traffic after alice's revocation: %v", err)
	}
}

// gogoc plays a stock legacy client from c's namespace: TSP over UDP to the control node,
// ANONYMOUS, v4v6; then, as gogoc's kernel tunnel does, IPv4-in-IPv6 to whatever address the
// offer names. That must be a TEP, and an ICMP echo to the IPv4 server must come back.
func (ce *clusterEnv) gogoc(c *clusterClient) {
	t := ce.t
	t.Helper()
	src := netip.MustParseAddr("fd00:d57e::3:1")
	if err := c.ns.AddAddr(clusterLink, netip.PrefixFrom(src, 128)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conn net.Conn
	var offer *tsp.Tunnel
	err := c.ns.Do(func() error {
		d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		var err error
		if conn, err = d.DialContext(ctx, "udp", ce.gws[0].addr()); err != nil {
			return err
		}
		offer, err = gogocUDP(ctx, conn, src)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tep := slices.IndexFunc(ce.gws[1:], func(g *clusterGW) bool { return g.v6 == offer.Server.IPv6 })
	if tep < 0 {
		t.Fatalf("the v4v6 offer names %s, not a TEP node", offer.Server.IPv6)
	}
	recv := &echoReceiver{replies: make(chan struct{}, 1)}
	var link *plain.ClientLink
	if err := c.ns.Do(func() error {
		var err error
		link, err = plain.Dial(src, offer.Server.IPv6, recv)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	lease := offer.Client.IPv4
	err = poll(20*time.Second, 0, func() error {
		if err := link.WritePackets([][]byte{packet.AppendEchoRequest(nil, lease, clusterServer, 0x6060, 1)}); err != nil {
			return err
		}
		select {
		case <-recv.replies:
			return nil
		case <-time.After(200 * time.Millisecond):
			return errors.New("no echo reply")
		}
	})
	if err != nil {
		t.Fatalf("gogoc-style client %s (lease %s) through %s: %v", src, lease, ce.gws[1+tep].name, err)
	}
	t.Logf("gogoc-style client (TSP over UDP to %s, v4v6): tunnel to %s as offered, %s reaches %s", ce.gws[0].name, ce.gws[1+tep].name, lease, clusterServer)
}

// echoReceiver signals each ICMP echo reply it receives.
type echoReceiver struct{ replies chan struct{} }

func (r *echoReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		if len(p) >= 21 && p[9] == 1 && p[20] == 0 { // ICMP echo reply
			select {
			case r.replies <- struct{}{}:
			default:
			}
		}
	}
}
