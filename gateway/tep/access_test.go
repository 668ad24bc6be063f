package tep

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/internal/testclock"
	"github.com/dstmgw/dstm/tunnel"
)

// l4 builds a TCP (flags) or UDP packet with ports and valid checksums.
func l4(src, dst netip.Addr, proto uint8, sport, dport uint16, flags byte) []byte {
	n := 8
	if proto == packet.ProtoTCP {
		n = 20
	}
	p := make([]byte, 20+n)
	p[0], p[8], p[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	packet.SetHeaderChecksum(p)
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	if proto == packet.ProtoTCP {
		p[32], p[33] = 5<<4, flags
	} else {
		binary.BigEndian.PutUint16(p[24:], 8)
	}
	l := p[20:]
	binary.BigEndian.PutUint16(l[map[uint8]int{packet.ProtoTCP: 16, packet.ProtoUDP: 6}[proto]:], packet.Checksum(l, packet.PseudoHeaderSum(p, len(l))))
	return p
}

func mustSet(t testing.TB, name string, a *acl.Access) *acl.Set {
	t.Helper()
	s, err := acl.Compile(name, a)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pfx(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }

// webOnly allows TCP 80 to the server's /24 and nothing inbound.
func webOnly(t testing.TB) *acl.Set {
	return mustSet(t, "policy.default.access", &acl.Access{Outbound: []acl.Rule{
		{To: pfx("198.51.100.0/24"), Proto: acl.ProtoTCP, Ports: []acl.PortRange{{Lo: 80, Hi: 80}}},
	}})
}

func only(s *acl.Set) func(string, []string) *acl.Set {
	return func(string, []string) *acl.Set { return s }
}

func deniedOf(st Stats, rule, dir string) uint64 {
	for _, d := range st.Denied {
		if d.Rule == rule && d.Direction == dir {
			return d.Packets
		}
	}
	return 0
}

const ack = 0x10

func TestAccessOutboundInboundReplies(t *testing.T) {
	h := newHarness(t, Config{Access: only(webOnly(t))})
	web := l4(lease, server, packet.ProtoTCP, 40000, 80, 0x02)
	h.sess.ReceivePackets([][]byte{web, l4(lease, server, packet.ProtoTCP, 40000, 8080, 0x02), l4(lease, server, packet.ProtoUDP, 1, 53, 0)})
	if got := recv(t, h.dev.Out, "allowed packet on TUN"); !bytes.Equal(got, web) {
		t.Fatal("allowed packet changed")
	}
	expectNone(t, h.dev.Out, "denied packet on TUN")
	// The reply passes; an unsolicited connection and a reply to the denied flow do not.
	reply := l4(server, lease, packet.ProtoTCP, 80, 40000, 0x12)
	h.dev.In <- l4(server, lease, packet.ProtoTCP, 50000, 22, 0x02)
	h.dev.In <- l4(server, lease, packet.ProtoTCP, 8080, 40000, 0x12)
	h.dev.In <- reply
	if got := recv(t, h.link.out, "reply in tunnel"); !bytes.Equal(got, reply) {
		t.Fatalf("tunnel got % x, want the reply", got[:28])
	}
	expectNone(t, h.link.out, "unsolicited packet in tunnel")
	waitDrop(t, h.tep, DropDeniedInbound, 2)
	st := h.tep.Stats()
	if st.Drops["denied_outbound"] != 2 || deniedOf(st, "policy.default.access", "outbound") != 2 ||
		deniedOf(st, "policy.default.access", "inbound") != 2 {
		t.Fatalf("drops %v, denied %+v", nonZeroDrops(st), st.Denied)
	}
}

func TestAccessNoneIsTodaysBehaviour(t *testing.T) {
	h := newHarness(t, Config{Access: only(nil)})
	h.dev.In <- l4(server, lease, packet.ProtoTCP, 50000, 22, 0x02)
	recv(t, h.link.out, "inbound packet without rules")
	h.sess.ReceivePackets([][]byte{l4(lease, server, packet.ProtoUDP, 1, 9999, 0)})
	recv(t, h.dev.Out, "outbound packet without rules")
	if h.sess.rules.Load() != nil {
		t.Fatal("a session without rules got a connection table")
	}
}

// TestAccessSetAccessLive narrows the rules of an established session: its
// next packets are judged by the new rules, allowed flows go on, and the
// session stays.
func TestAccessSetAccessLive(t *testing.T) {
	all := mustSet(t, "policy.groups[\"admins\"].access", &acl.Access{Outbound: []acl.Rule{{To: pfx("0.0.0.0/0")}}})
	h := newHarness(t, Config{Access: only(all)})
	ssh := l4(lease, server, packet.ProtoTCP, 40001, 22, ack)
	sshBack := l4(server, lease, packet.ProtoTCP, 22, 40001, ack)
	web := l4(lease, server, packet.ProtoTCP, 40000, 80, ack)
	webBack := l4(server, lease, packet.ProtoTCP, 80, 40000, ack)
	h.sess.ReceivePackets([][]byte{ssh, web})
	recv(t, h.dev.Out, "ssh")
	recv(t, h.dev.Out, "web")
	h.dev.In <- sshBack
	recv(t, h.link.out, "ssh reply before the change")

	h.tep.SetAccess(only(webOnly(t)))
	h.sess.ReceivePackets([][]byte{ssh, web})
	if got := recv(t, h.dev.Out, "web after the change"); !bytes.Equal(got, web) {
		t.Fatal("ssh passed after the change")
	}
	expectNone(t, h.dev.Out, "ssh after the change")
	h.dev.In <- sshBack
	h.dev.In <- webBack
	if got := recv(t, h.link.out, "web reply after the change"); !bytes.Equal(got, webBack) {
		t.Fatal("ssh reply passed after the change")
	}
	waitDrop(t, h.tep, DropDeniedInbound, 1)
	if n := len(h.tep.Sessions()); n != 1 {
		t.Fatalf("%d sessions after the change", n)
	}
	// And back: no rules at all.
	h.tep.SetAccess(nil)
	h.sess.ReceivePackets([][]byte{ssh})
	recv(t, h.dev.Out, "ssh without rules")
}

func TestAccessReject(t *testing.T) {
	s := mustSet(t, "r", &acl.Access{Reject: true})
	h := newHarness(t, Config{Access: only(s)})
	syn := l4(lease, server, packet.ProtoTCP, 40000, 8080, 0x02)
	h.sess.ReceivePackets([][]byte{syn})
	rst := recv(t, h.link.out, "RST to the client")
	if packet.Proto(rst) != packet.ProtoTCP || rst[33] != 0x14 || packet.Src(rst) != server || packet.Dst(rst) != lease {
		t.Fatalf("not a RST from the server: % x", rst)
	}
	h.dev.In <- l4(server, lease, packet.ProtoUDP, 5000, 161, 0)
	icmp := recv(t, h.dev.Out, "ICMP to the sender")
	if packet.Proto(icmp) != packet.ProtoICMP || icmp[20] != 3 || icmp[21] != packet.CodeAdminProhibited || packet.Src(icmp) != lease {
		t.Fatalf("not ICMP administratively prohibited from the lease: % x", icmp[:28])
	}
	expectNone(t, h.link.out, "denied packet in tunnel")
	if st := h.tep.Stats(); st.ICMPSent != 2 {
		t.Fatalf("ICMP/RST sent %d", st.ICMPSent)
	}
}

// syncBuffer is a log sink safe for the TEP's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

func TestAccessDeniedFloodLogsASample(t *testing.T) {
	var logs syncBuffer
	h := newHarness(t, Config{Access: only(webOnly(t)), Logger: zerolog.New(&logs).Level(zerolog.InfoLevel)})
	flood := make([][]byte, 64)
	for i := range flood {
		flood[i] = l4(lease, server, packet.ProtoUDP, uint16(i+1), 9, 0)
	}
	for range 100 {
		h.sess.ReceivePackets(flood)
	}
	if n := len(logs.lines()); n != 1 {
		t.Fatalf("%d log lines for 6400 denied packets:\n%s", n, strings.Join(logs.lines(), "\n"))
	}
	h.clock.Advance(denyLogEvery)
	h.sess.ReceivePackets(flood[:1])
	lines := logs.lines()
	if len(lines) != 2 || !strings.Contains(lines[1], `"denied":6400`) || !strings.Contains(lines[1], `"rule":"policy.default.access"`) {
		t.Fatalf("second sample:\n%s", strings.Join(lines, "\n"))
	}
	if d := h.tep.Stats().Drops["denied_outbound"]; d != 6401 {
		t.Fatalf("denied_outbound %d", d)
	}
}

func TestAccessConntrackEvictionsCounted(t *testing.T) {
	all := mustSet(t, "a", &acl.Access{Outbound: []acl.Rule{{To: pfx("0.0.0.0/0")}}})
	h := newHarness(t, Config{Access: only(all), Conntrack: acl.TrackConfig{MaxFlows: 16}})
	var pkts [][]byte
	for i := range 64 {
		pkts = append(pkts, l4(lease, server, packet.ProtoUDP, uint16(1000+i), 53, 0))
	}
	h.sess.ReceivePackets(pkts)
	if ev := h.tep.Stats().ConntrackEvictions; ev < 64-16 {
		t.Fatalf("%d evictions for 64 flows in a table of 16", ev)
	}
}

func TestAccessHotPathAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops objects at random under the race detector")
	}
	clock := testclock.New(time.Unix(1_000_000, 0))
	var rules []acl.Rule
	for i := range 100 {
		rules = append(rules, acl.Rule{To: pfx(fmt.Sprintf("10.%d.0.0/16", i)), Proto: acl.ProtoTCP, Ports: []acl.PortRange{{Lo: 443, Hi: 443}}})
	}
	rules = append(rules, acl.Rule{To: pfx("198.51.100.0/24"), Proto: acl.ProtoTCP, Ports: []acl.PortRange{{Lo: 80, Hi: 80}}})
	tp, s, link := newAllocTEP(t, Config{Now: clock.Now,
		Access: only(mustSet(t, "bench", &acl.Access{Outbound: rules})), Logger: zerolog.Nop()}, false)
	sc := tp.newInsideScratch()
	in := l4(server, lease, packet.ProtoTCP, 80, 40000, ack)
	denied := l4(server, lease, packet.ProtoTCP, 80, 40001, ack)
	out := [][]byte{l4(lease, server, packet.ProtoTCP, 40000, 80, ack), l4(lease, server, packet.ProtoTCP, 40000, 81, ack)}
	buf := append([]byte(nil), in...)
	timeout := time.After(time.Minute) // one timer: a timer per run would allocate
	run := func() {
		s.ReceivePackets(out) // one allowed, one denied
		copy(buf, in)
		tp.handleInside(buf, sc, clock.Now().UnixNano(), false) // a reply
		select {
		case <-link.notify:
		case <-timeout:
			t.Fatal("the reply did not reach the tunnel")
		}
		copy(buf, denied)
		tp.handleInside(buf, sc, clock.Now().UnixNano(), false) // denied
	}
	for range 10 {
		run()
	}
	if allocs := testing.AllocsPerRun(1000, run); allocs > 0.05 {
		t.Fatalf("%.2f allocations per round with rules", allocs)
	}
	st := tp.Stats()
	if st.Drops["denied_outbound"] < 1000 || st.Drops["denied_inbound"] < 1000 {
		t.Fatalf("the denied paths did not run: %v", nonZeroDrops(st))
	}
}

// TestAccessKeepalivePasses: the client's keepalive (echo to the inner address) and its reply
// pass rules that allow nothing, so the client does not take the tunnel for dead.
func TestAccessKeepalivePasses(t *testing.T) {
	h := newHarness(t, Config{Access: only(mustSet(t, "none", &acl.Access{}))})
	req := packet.AppendEchoRequest(nil, lease, inner, 7, 1)
	h.sess.ReceivePackets([][]byte{req})
	recv(t, h.dev.Out, "keepalive to the inner address")
	reply := packet.AppendEchoRequest(nil, inner, lease, 7, 1)
	reply[20] = packet.ICMPTypeEchoReply
	h.dev.In <- reply
	recv(t, h.link.out, "keepalive reply")
	// An echo to anyone else is no keepalive.
	h.sess.ReceivePackets([][]byte{packet.AppendEchoRequest(nil, lease, server, 7, 2)})
	expectNone(t, h.dev.Out, "echo to the server")
	if d := h.tep.Stats().Drops["denied_outbound"]; d != 1 {
		t.Fatalf("denied_outbound %d", d)
	}
}

// TestAccessClientToClient: a client reaches another client when its outbound rules allow
// the other's pool and the other's inbound rules allow the first's; the kernel routes the
// packet from the TUN device back into it, so each side's rules are checked on its own side.
func TestAccessClientToClient(t *testing.T) {
	bobLease := netip.MustParseAddr("10.99.0.3")
	staff := mustSet(t, `policy.groups["staff"].access`, &acl.Access{Outbound: []acl.Rule{{To: pfx("10.99.0.0/24"), Proto: acl.ProtoTCP}}})
	ops := mustSet(t, `policy.groups["ops"].access`, &acl.Access{Inbound: []acl.Rule{{From: pfx("10.99.0.2/32"), Proto: acl.ProtoTCP, Ports: []acl.PortRange{{Lo: 22, Hi: 22}}}}})
	h := newHarness(t, Config{Access: func(id string, _ []string) *acl.Set {
		if id == "alice" {
			return staff
		}
		return ops
	}})
	bob, err := h.tep.AddSession(SessionInfo{ID: "s2", Identity: "bob", Lease: bobLease, Transport: tunnel.Plain})
	if err != nil {
		t.Fatal(err)
	}
	bobLink := newFakeLink(tunnel.Plain)
	bob.SetLink(bobLink)
	kernel := func(what string) { h.dev.In <- recv(t, h.dev.Out, what) } // routes pool addresses back into the TUN device

	syn := l4(lease, bobLease, packet.ProtoTCP, 40000, 22, 0x02)
	h.sess.ReceivePackets([][]byte{syn})
	kernel("alice's SYN on the TUN device")
	if got := recv(t, bobLink.out, "alice's SYN at bob"); !bytes.Equal(got, syn) {
		t.Fatal("SYN changed")
	}
	synAck := l4(bobLease, lease, packet.ProtoTCP, 22, 40000, 0x12)
	bob.ReceivePackets([][]byte{synAck})
	kernel("bob's SYN-ACK on the TUN device")
	recv(t, h.link.out, "bob's SYN-ACK at alice")

	// Bob may not open a connection to alice (no outbound rule), nor alice to bob's port 23.
	bob.ReceivePackets([][]byte{l4(bobLease, lease, packet.ProtoTCP, 50000, 22, 0x02)})
	h.sess.ReceivePackets([][]byte{l4(lease, bobLease, packet.ProtoTCP, 40001, 23, 0x02)})
	kernel("alice's SYN to port 23 (allowed out by her rules)")
	expectNone(t, bobLink.out, "a SYN to bob's port 23")
	st := h.tep.Stats()
	if deniedOf(st, `policy.groups["ops"].access`, "outbound") != 1 || deniedOf(st, `policy.groups["ops"].access`, "inbound") != 1 {
		t.Fatalf("denied %+v", st.Denied)
	}
}
