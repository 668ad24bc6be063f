package tep

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/internal/testclock"
	"github.com/dstmgw/dstm/tunnel"
)

var (
	inner   = netip.MustParseAddr("10.99.255.1")
	pool    = netip.MustParsePrefix("10.99.0.0/24")
	lease   = netip.MustParseAddr("10.99.0.2")
	unused  = netip.MustParseAddr("10.99.0.77")
	server  = netip.MustParseAddr("198.51.100.2")
	outside = netip.MustParseAddr("203.0.113.9")
)

type harness struct {
	tep   *TEP
	dev   *fakeTUN
	clock *testclock.Clock
	sess  *Session
	link  *fakeLink
	errc  chan error
}

// newHarness runs a TEP on a fake TUN with one session for lease on a plain
// fake link. cfg fields set by the caller are kept.
func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	h := &harness{dev: newFakeTUN(8), clock: testclock.New(time.Unix(1_000_000, 0)), errc: make(chan error, 1)}
	cfg.Device, cfg.InnerAddr, cfg.Pools, cfg.Now = h.dev, inner, []netip.Prefix{pool}, h.clock.Now
	var err error
	if h.tep, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { h.errc <- h.tep.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
		waitGoroutines(t, goroutines)
	})
	if h.sess, err = h.tep.AddSession(SessionInfo{ID: "s1", Identity: "alice", Lease: lease, Transport: tunnel.Plain}); err != nil {
		t.Fatal(err)
	}
	h.link = newFakeLink(tunnel.Plain)
	h.sess.SetLink(h.link)
	return h
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for runtime.NumGoroutine() > want {
		select {
		case <-tick.C:
		case <-deadline:
			buf := make([]byte, 1<<16)
			t.Errorf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
			return
		}
	}
}

// waitFor polls cond until it holds; counters have no channel to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timeout waiting for %s", what)
		}
	}
}

func waitDrop(t *testing.T, tp *TEP, reason DropReason, want uint64) {
	t.Helper()
	waitFor(t, "drops["+reason.String()+"]", func() bool { return tp.Stats().Drops[reason.String()] == want })
}

func TestNewValidates(t *testing.T) {
	dev := newFakeTUN(1)
	good := Config{Device: dev, InnerAddr: inner, Pools: []netip.Prefix{pool}}
	tests := []struct {
		name string
		mut  func(c *Config)
	}{
		{"no device", func(c *Config) { c.Device = nil }},
		{"v6 inner", func(c *Config) { c.InnerAddr = netip.MustParseAddr("::1") }},
		{"no pools", func(c *Config) { c.Pools = nil }},
		{"v6 pool", func(c *Config) { c.Pools = []netip.Prefix{netip.MustParsePrefix("fd00::/64")} }},
		{"tiny MTU", func(c *Config) { c.MTU = 100 }},
		{"negative queue", func(c *Config) { c.QueueLen = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mut(&c)
			if _, err := New(c); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
}

func TestInsideToTunnel(t *testing.T) {
	h := newHarness(t, Config{})
	p := ipv4(server, lease, packet.ProtoUDP, 200, true, 0)
	h.dev.In <- p
	got := recv(t, h.link.out, "packet in tunnel")
	if string(got) != string(p) {
		t.Fatal("packet changed on its way into the tunnel")
	}
	waitFor(t, "out counter", func() bool { return h.tep.Sessions()[0].Out.Packets == 1 })
	snap := h.tep.Sessions()
	if len(snap) != 1 || snap[0].Out.Packets != 1 || snap[0].Out.Bytes != 200 || snap[0].Endpoint.Addr().String() != "2001:db8::2" {
		t.Fatalf("snapshot %+v", snap)
	}
	if tr := h.tep.Stats().Transports[tunnel.Plain]; tr.Out.Packets != 1 {
		t.Fatalf("plain traffic %+v", tr)
	}
}

func TestTunnelToInside(t *testing.T) {
	h := newHarness(t, Config{})
	good := ipv4(lease, server, packet.ProtoUDP, 120, true, 0)
	padded := append(append([]byte(nil), good...), 0, 0, 0, 0)
	h.sess.ReceivePackets([][]byte{padded, ipv4(outside, server, packet.ProtoUDP, 60, false, 0), {0x45, 0}})
	if got := recv(t, h.dev.Out, "packet on TUN"); string(got) != string(good) {
		t.Fatalf("TUN got %d bytes, want the trimmed packet", len(got))
	}
	expectNone(t, h.dev.Out, "spoofed or malformed packet on TUN")
	waitFor(t, "in counter", func() bool { return h.tep.Sessions()[0].In.Packets == 1 })
	st := h.tep.Stats()
	if st.Drops["spoofed_source"] != 1 || st.Drops["malformed"] != 1 || st.Transports[tunnel.Plain].In.Packets != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNoSessionICMP(t *testing.T) {
	h := newHarness(t, Config{ICMPRate: 1, ICMPBurst: 2})
	orig := ipv4(server, unused, packet.ProtoUDP, 100, false, 0)
	for range 3 {
		h.dev.In <- orig
	}
	for i := range 2 {
		icmp := recv(t, h.dev.Out, "ICMP host unreachable")
		if packet.Proto(icmp) != packet.ProtoICMP || icmp[20] != 3 || icmp[21] != 1 {
			t.Fatalf("ICMP %d: type %d code %d", i, icmp[20], icmp[21])
		}
		if packet.Src(icmp) != unused || packet.Dst(icmp) != server {
			t.Fatalf("ICMP %v -> %v", packet.Src(icmp), packet.Dst(icmp))
		}
	}
	waitDrop(t, h.tep, DropNoSession, 3)
	expectNone(t, h.dev.Out, "ICMP beyond the burst")
	h.clock.Advance(time.Second)
	h.dev.In <- orig
	recv(t, h.dev.Out, "ICMP after refill")
	// Outside the pools: dropped without ICMP.
	h.dev.In <- ipv4(server, netip.MustParseAddr("192.0.2.1"), packet.ProtoUDP, 100, false, 0)
	waitDrop(t, h.tep, DropNoSession, 5)
	h.clock.Advance(time.Hour)
	expectNone(t, h.dev.Out, "ICMP for a non-pool destination")
	if got := h.tep.Stats().ICMPSent; got != 3 {
		t.Fatalf("ICMPSent = %d", got)
	}
}

func TestMSSClampBothDirections(t *testing.T) {
	h := newHarness(t, Config{MTU: 1500})
	h.dev.In <- ipv4(server, lease, packet.ProtoTCP, 44, true, 1460)
	out := recv(t, h.link.out, "SYN in tunnel")
	if tcpMSS(out) != 1240 || !tcpValid(out) {
		t.Fatalf("inside SYN: MSS %d valid %v", tcpMSS(out), tcpValid(out))
	}
	h.sess.ReceivePackets([][]byte{ipv4(lease, server, packet.ProtoTCP, 44, true, 1400)})
	in := recv(t, h.dev.Out, "SYN on TUN")
	if tcpMSS(in) != 1240 || !tcpValid(in) {
		t.Fatalf("outside SYN: MSS %d valid %v", tcpMSS(in), tcpValid(in))
	}
}

func TestTooBig(t *testing.T) {
	h := newHarness(t, Config{MTU: 1500})
	// Inside, DF: ICMP fragmentation needed back to the sender.
	h.dev.In <- ipv4(server, lease, packet.ProtoUDP, 1400, true, 0)
	icmp := recv(t, h.dev.Out, "frag-needed on TUN")
	if icmp[20] != 3 || icmp[21] != 4 || binary.BigEndian.Uint16(icmp[26:28]) != DefaultMTU || packet.Dst(icmp) != server {
		t.Fatalf("frag-needed: type %d code %d mtu %d", icmp[20], icmp[21], binary.BigEndian.Uint16(icmp[26:28]))
	}
	// Inside, no DF: sent; the outer layer fragments.
	h.dev.In <- ipv4(server, lease, packet.ProtoUDP, 1400, false, 0)
	if got := recv(t, h.link.out, "non-DF oversize packet"); len(got) != 1400 {
		t.Fatalf("got %d bytes", len(got))
	}
	// Outside, DF: ICMP into the tunnel from the inner address.
	h.sess.ReceivePackets([][]byte{ipv4(lease, server, packet.ProtoUDP, 1400, true, 0)})
	icmp = recv(t, h.link.out, "frag-needed in tunnel")
	if icmp[21] != 4 || packet.Src(icmp) != inner || packet.Dst(icmp) != lease {
		t.Fatalf("frag-needed into tunnel: code %d %v -> %v", icmp[21], packet.Src(icmp), packet.Dst(icmp))
	}
	expectNone(t, h.dev.Out, "oversize DF packet on TUN")
	if d := h.tep.Stats().Drops["too_big"]; d != 2 {
		t.Fatalf("too_big = %d", d)
	}
}

func TestQueueFullDropsNewest(t *testing.T) {
	h := newHarness(t, Config{QueueLen: 4})
	h.link.block, h.link.entered = make(chan struct{}), make(chan struct{}, 1)
	var unblock sync.Once
	release := func() { unblock.Do(func() { close(h.link.block) }) }
	t.Cleanup(release)
	mk := func(id int) []byte {
		p := ipv4(server, lease, packet.ProtoUDP, 100, true, 0)
		p[4] = byte(id) // IP ID marks the order
		packet.SetHeaderChecksum(p)
		return p
	}
	// The writer takes packet 0 and blocks in WritePackets; 1..4 fill the
	// queue; 5..9 are the newest and are dropped.
	h.dev.In <- mk(0)
	select {
	case <-h.link.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("writer did not reach the link")
	}
	for i := 1; i < 10; i++ {
		h.dev.In <- mk(i)
	}
	waitDrop(t, h.tep, DropQueueFull, 5)
	release()
	for want := range 5 {
		if got := recv(t, h.link.out, "queued packet"); int(got[4]) != want {
			t.Fatalf("packet %d has id %d: order or drop policy broken", want, got[4])
		}
	}
	expectNone(t, h.link.out, "a dropped packet")
}

func TestSessionLifecycle(t *testing.T) {
	h := newHarness(t, Config{})
	if _, err := h.tep.AddSession(SessionInfo{ID: "s2", Lease: lease}); !errors.Is(err, ErrLeaseInUse) {
		t.Fatalf("duplicate lease: %v", err)
	}
	if _, err := h.tep.AddSession(SessionInfo{ID: "s3", Lease: server}); !errors.Is(err, ErrNotInPool) {
		t.Fatalf("lease outside pools: %v", err)
	}
	if _, err := h.tep.AddSession(SessionInfo{ID: "s4", Lease: unused, MTU: 9000}); err == nil {
		t.Fatal("session MTU above the TEP MTU accepted")
	}
	h.tep.RemoveSession(lease, "other-id")
	if h.tep.Session(lease) == nil {
		t.Fatal("RemoveSession with a stale id removed the session")
	}
	h.tep.RemoveSession(lease, "s1")
	if h.tep.Session(lease) != nil || h.tep.Stats().Sessions != 0 {
		t.Fatal("session not removed")
	}
	h.sess.ReceivePackets([][]byte{ipv4(lease, server, packet.ProtoUDP, 100, true, 0)})
	waitDrop(t, h.tep, DropNoSession, 1)
	s, err := h.tep.AddSession(SessionInfo{ID: "s5", Lease: lease})
	if err != nil {
		t.Fatalf("re-adding a released lease: %v", err)
	}
	// No link attached yet: packets are dropped as link errors.
	h.dev.In <- ipv4(server, lease, packet.ProtoUDP, 100, true, 0)
	waitDrop(t, h.tep, DropLinkError, 1)
	s.SetLink(newFakeLink(tunnel.Plain))
}

func TestTransportSwitchCounters(t *testing.T) {
	h := newHarness(t, Config{})
	h.sess.ReceivePackets([][]byte{ipv4(lease, server, packet.ProtoUDP, 100, true, 0)})
	recv(t, h.dev.Out, "packet over plain")
	waitFor(t, "in counter", func() bool { return h.tep.Sessions()[0].In.Packets == 1 })
	tls := newFakeLink(tunnel.TLS)
	h.sess.SetLink(tls)
	h.sess.ReceivePackets([][]byte{ipv4(lease, server, packet.ProtoUDP, 100, true, 0)})
	recv(t, h.dev.Out, "packet over TLS")
	waitFor(t, "in counter", func() bool { return h.tep.Sessions()[0].In.Packets == 2 })
	h.dev.In <- ipv4(server, lease, packet.ProtoUDP, 100, true, 0)
	recv(t, tls.out, "packet into TLS link")
	waitFor(t, "TLS out counter", func() bool { return h.tep.Stats().Transports[tunnel.TLS].Out.Packets == 1 })
	st := h.tep.Stats()
	if st.Transports[tunnel.Plain].In.Packets != 1 || st.Transports[tunnel.TLS].In.Packets != 1 || st.Transports[tunnel.TLS].Out.Packets != 1 {
		t.Fatalf("per-transport %+v", st.Transports)
	}
	if snap := h.tep.Sessions(); snap[0].Transport != tunnel.TLS || snap[0].In.Packets != 2 {
		t.Fatalf("snapshot %+v", snap[0])
	}
	h.tep.RemoveSession(lease, "s1")
	if st := h.tep.Stats(); st.Transports[tunnel.TLS].In.Packets != 1 || st.Transports[tunnel.Plain].In.Packets != 1 {
		t.Fatalf("retired counters %+v", st.Transports)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	h := newHarness(t, Config{})
	if err := h.tep.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.tep.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.errc:
		if err != nil {
			t.Fatal(err)
		}
		h.errc <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if _, err := h.tep.AddSession(SessionInfo{ID: "x", Lease: unused}); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddSession after Close: %v", err)
	}
}

// newAllocTEP is the setup of the allocation tests: a TEP on cfg with a discarding device,
// one session on lease and a link that counts what it is given (notify after each batch).
func newAllocTEP(t *testing.T, cfg Config, direct bool) (*TEP, *Session, *fakeLink) {
	t.Helper()
	dev := newFakeTUN(1)
	dev.discard = true
	cfg.Device, cfg.InnerAddr, cfg.Pools = dev, inner, []netip.Prefix{pool}
	tp, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	s, err := tp.AddSession(SessionInfo{ID: "a", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	link := newFakeLink(tunnel.Plain)
	link.discard, link.direct = true, direct
	link.notify = make(chan struct{}, 1)
	s.SetLink(link)
	return tp, s, link
}

// TestHotPathAllocations: a packet each way allocates nothing, through the writer and
// written directly by the TUN reader.
func TestHotPathAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops objects at random under the race detector")
	}
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			tp, s, link := newAllocTEP(t, Config{}, direct)
			sc := tp.newInsideScratch()
			in := ipv4(server, lease, packet.ProtoTCP, 44, true, 1460)
			out := [][]byte{ipv4(lease, server, packet.ProtoTCP, 44, true, 1460), ipv4(lease, server, packet.ProtoUDP, 1000, true, 0)}
			// Warm the pools, then measure.
			buf := append([]byte(nil), in...)
			run := func() {
				copy(buf, in)
				tp.handleInside(buf, sc, 0, true)
				<-link.notify // the link has the packet (and the writer returned its buffer)
				s.ReceivePackets(out)
			}
			for range 10 {
				run()
			}
			allocs := testing.AllocsPerRun(1000, run)
			if allocs > 0.05 { // sync.Pool may rarely lose an object to GC
				t.Fatalf("%.2f allocations per packet pair", allocs)
			}
		})
	}
}

func TestInsideDropsNonIPv4(t *testing.T) {
	h := newHarness(t, Config{})
	v6 := make([]byte, 48)
	v6[0] = 0x60
	h.dev.In <- v6
	h.dev.In <- []byte{0x45, 0, 0}
	waitDrop(t, h.tep, DropNotIPv4, 1)
	waitDrop(t, h.tep, DropMalformed, 1)
	expectNone(t, h.link.out, "non-IPv4 packet in tunnel")
}

// TestAddPools: an address of a pool added at run time (a reload) can carry a session.
func TestAddPools(t *testing.T) {
	h := newHarness(t, Config{})
	added := netip.MustParsePrefix("10.98.0.0/24")
	addr := netip.MustParseAddr("10.98.0.7")
	if _, err := h.tep.AddSession(SessionInfo{ID: "s2", Lease: addr, Transport: tunnel.Plain}); !errors.Is(err, ErrNotInPool) {
		t.Fatalf("AddSession outside the pools: %v, want ErrNotInPool", err)
	}
	if err := h.tep.AddPools(netip.MustParsePrefix("2001:db8::/64")); err == nil {
		t.Fatal("an IPv6 pool was accepted")
	}
	if err := h.tep.AddPools(added); err != nil {
		t.Fatal(err)
	}
	if _, err := h.tep.AddSession(SessionInfo{ID: "s2", Lease: addr, Transport: tunnel.Plain}); err != nil {
		t.Fatalf("AddSession in the added pool: %v", err)
	}
}

// TestLastReceive: a session's last receive time starts when it is added and follows the
// batches from its tunnel.
func TestLastReceive(t *testing.T) {
	h := newHarness(t, Config{})
	added := h.sess.LastReceive()
	if !added.Equal(h.clock.Now()) {
		t.Fatalf("LastReceive %v, want the time of AddSession %v", added, h.clock.Now())
	}
	h.clock.Advance(time.Minute)
	h.sess.ReceivePackets([][]byte{ipv4(lease, server, packet.ProtoUDP, 100, true, 0)})
	if got := h.sess.LastReceive(); !got.Equal(h.clock.Now()) {
		t.Fatalf("LastReceive %v after a packet, want %v", got, h.clock.Now())
	}
}
