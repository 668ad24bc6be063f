package tep

import (
	"bytes"
	"maps"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/internal/logging/logtest"
	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
)

var lease2 = netip.MustParseAddr("10.99.0.3")

// noWriter fails unless s has no writer goroutine and no queue memory: what
// an idle session costs.
func noWriter(t *testing.T, s *Session) {
	t.Helper()
	s.oqMu.Lock()
	defer s.oqMu.Unlock()
	if s.oq.writer || s.oq.bufs != nil {
		t.Fatalf("idle session has a writer (%v) or queue memory (%d)", s.oq.writer, cap(s.oq.bufs))
	}
}

// writerStopped fails unless s's writer (if any) has returned.
func writerStopped(t *testing.T, s *Session) {
	t.Helper()
	within(t, "the writer to stop", s.writers.Wait)
}

// within runs f and fails if it does not return in time.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

func nonZeroDrops(st Stats) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range st.Drops {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// TestSessionWithoutLink checks that a session without a link has no queue
// and no writer goroutine, and that its outbound packets are dropped as
// link_error at once.
func TestSessionWithoutLink(t *testing.T) {
	tests := []struct {
		name  string
		send  func(h *harness, s *Session)
		drops map[string]uint64
		icmp  uint64 // ICMP errors generated
		tun   int    // packets expected on the TUN device
	}{
		{
			name:  "inside packet",
			send:  func(h *harness, _ *Session) { h.dev.In <- ipv4(server, lease2, packet.ProtoUDP, 200, true, 0) },
			drops: map[string]uint64{"link_error": 1},
		},
		{
			name:  "inside SYN",
			send:  func(h *harness, _ *Session) { h.dev.In <- ipv4(server, lease2, packet.ProtoTCP, 44, true, 1460) },
			drops: map[string]uint64{"link_error": 1},
		},
		{
			// Answered from the inside as before: the MTU check comes first.
			name:  "inside too big",
			send:  func(h *harness, _ *Session) { h.dev.In <- ipv4(server, lease2, packet.ProtoUDP, 1400, true, 0) },
			drops: map[string]uint64{"too_big": 1},
			icmp:  1, tun: 1,
		},
		{
			// The ICMP error towards the client has no link to go to.
			name: "outside too big",
			send: func(_ *harness, s *Session) {
				s.ReceivePackets([][]byte{ipv4(lease2, server, packet.ProtoUDP, 1400, true, 0)})
			},
			drops: map[string]uint64{"too_big": 1, "link_error": 1},
			icmp:  1,
		},
		{
			// The outside direction needs no writer.
			name: "outside packet",
			send: func(_ *harness, s *Session) {
				s.ReceivePackets([][]byte{ipv4(lease2, server, packet.ProtoUDP, 100, true, 0)})
			},
			tun: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{MTU: 1500})
			goroutines := runtime.NumGoroutine()
			s, err := h.tep.AddSession(SessionInfo{ID: "s2", Lease: lease2, Transport: tunnel.DTLS})
			if err != nil {
				t.Fatal(err)
			}
			noWriter(t, s)
			tt.send(h, s)
			want := tt.drops
			if want == nil {
				want = map[string]uint64{}
			}
			for range tt.tun {
				recv(t, h.dev.Out, "packet on TUN")
			}
			waitFor(t, "drops", func() bool { return maps.Equal(nonZeroDrops(h.tep.Stats()), want) })
			expectNone(t, h.dev.Out, "extra packet on TUN")
			expectNone(t, h.link.out, "packet in the other session's link")
			st := h.tep.Stats()
			if got := nonZeroDrops(st); !maps.Equal(got, want) {
				t.Fatalf("drops %v, want %v", got, want)
			}
			if st.ICMPSent != tt.icmp {
				t.Fatalf("ICMPSent = %d, want %d", st.ICMPSent, tt.icmp)
			}
			noWriter(t, s)
			if n := runtime.NumGoroutine(); n > goroutines {
				t.Fatalf("goroutines %d > %d: a session without a link started one", n, goroutines)
			}
			within(t, "RemoveSession", func() { h.tep.RemoveSession(lease2, "s2") })
		})
	}
}

// TestWriterOnDemand checks that a session has a writer goroutine only while
// it has packets to send: none after SetLink, one with the first packet, none
// again writerLinger after the last (with its queue memory given back); a
// detach drops new packets as link_error, and a later link gets them.
func TestWriterOnDemand(t *testing.T) {
	h := newHarness(t, Config{MTU: 1500})
	s, err := h.tep.AddSession(SessionInfo{ID: "s2", Lease: lease2, Transport: tunnel.DTLS})
	if err != nil {
		t.Fatal(err)
	}
	in := func() []byte { return ipv4(server, lease2, packet.ProtoUDP, 200, true, 0) }

	dtls := newFakeLink(tunnel.DTLS)
	s.SetLink(dtls)
	noWriter(t, s)
	p := in()
	h.dev.In <- p
	if got := recv(t, dtls.out, "packet in the DTLS link"); !bytes.Equal(got, p) {
		t.Fatal("packet changed on its way into the tunnel")
	}
	if !s.writerRunning() {
		t.Fatal("no writer lingers right after a packet")
	}
	s.ReceivePackets([][]byte{ipv4(lease2, server, packet.ProtoUDP, 1400, true, 0)})
	if icmp := recv(t, dtls.out, "frag-needed in the DTLS link"); packet.Proto(icmp) != packet.ProtoICMP {
		t.Fatal("not ICMP")
	}
	waitFor(t, "the writer to leave an idle session", func() bool { return !s.writerRunning() })
	noWriter(t, s)

	s.SetLink(nil)
	h.dev.In <- in()
	waitDrop(t, h.tep, DropLinkError, 1)
	s.ReceivePackets([][]byte{ipv4(lease2, server, packet.ProtoUDP, 1400, true, 0)})
	waitDrop(t, h.tep, DropLinkError, 2)
	expectNone(t, dtls.out, "packet in a detached link")
	noWriter(t, s)

	tls := newFakeLink(tunnel.TLS)
	s.SetLink(tls)
	h.dev.In <- in()
	recv(t, tls.out, "packet in the TLS link")
	waitFor(t, "TLS out counter", func() bool { return h.tep.Stats().Transports[tunnel.TLS].Out.Packets == 1 })
	if st := h.tep.Stats(); st.Transports[tunnel.DTLS].Out.Packets != 2 || st.Drops["queue_full"] != 0 {
		t.Fatalf("stats %+v", st)
	}
	within(t, "RemoveSession", func() { h.tep.RemoveSession(lease2, "s2") })
	writerStopped(t, s)
	noWriter(t, s)
}

// queued is the number of packets in s's queue.
func (s *Session) queued() int {
	s.oqMu.Lock()
	defer s.oqMu.Unlock()
	return s.oq.len()
}

// TestDirectWrite: a lone packet for a link that writes without waiting on its peer goes to
// the link from the TUN reader, with no writer goroutine; while the writer is writing, a lone
// packet is queued behind what it writes and arrives after it.
func TestDirectWrite(t *testing.T) {
	h := newHarness(t, Config{MTU: 1500})
	s, err := h.tep.AddSession(SessionInfo{ID: "s2", Lease: lease2, Transport: tunnel.DTLS})
	if err != nil {
		t.Fatal(err)
	}
	link := newFakeLink(tunnel.DTLS)
	link.direct = true
	s.SetLink(link)
	in := func(id byte) []byte {
		p := ipv4(server, lease2, packet.ProtoUDP, 200, true, 0)
		p[len(p)-1] = id
		return p
	}

	h.dev.In <- in(1)
	if got := recv(t, link.out, "a lone packet"); got[len(got)-1] != 1 {
		t.Fatalf("packet %d arrived", got[len(got)-1])
	}
	noWriter(t, s)
	if st := h.tep.Stats(); st.Transports[tunnel.DTLS].Out.Packets != 1 {
		t.Fatalf("direct write not counted: %+v", st.Transports[tunnel.DTLS].Out)
	}

	// The writer takes a frag-needed reply (queued by the outside path) and blocks in the link.
	link.block, link.entered = make(chan struct{}), make(chan struct{}, 1)
	s.ReceivePackets([][]byte{ipv4(lease2, server, packet.ProtoUDP, 1400, true, 0)})
	select {
	case <-link.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not reach the link")
	}
	h.dev.In <- in(2)
	waitFor(t, "the lone packet to be queued behind the writer's batch", func() bool { return s.queued() == 1 })
	close(link.block)
	if icmp := recv(t, link.out, "the writer's batch"); packet.Proto(icmp) != packet.ProtoICMP {
		t.Fatal("the lone packet overtook the writer's batch")
	}
	if got := recv(t, link.out, "the queued packet"); got[len(got)-1] != 2 {
		t.Fatalf("packet %d arrived", got[len(got)-1])
	}

	// While a direct write is under way, the writer hands out nothing: a reply queued
	// meanwhile follows the direct packet.
	waitFor(t, "the writer to end", func() bool { return !s.writerRunning() })
	link.block, link.entered = make(chan struct{}), make(chan struct{}, 1)
	h.dev.In <- in(4)
	select {
	case <-link.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the direct write did not reach the link")
	}
	s.ReceivePackets([][]byte{ipv4(lease2, server, packet.ProtoUDP, 1400, true, 0)})
	waitFor(t, "a writer for the queued reply", s.writerRunning)
	select {
	case <-link.entered:
		t.Fatal("the writer wrote while a direct write was under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(link.block)
	if got := recv(t, link.out, "the direct packet"); got[len(got)-1] != 4 {
		t.Fatal("the queued reply overtook the direct packet")
	}
	if icmp := recv(t, link.out, "the queued reply"); packet.Proto(icmp) != packet.ProtoICMP {
		t.Fatal("not ICMP")
	}

	// A link that cannot write directly right now (e.g. DTLS before data records) gets its
	// lone packets through the writer.
	link.direct = false
	waitFor(t, "the writer to end", func() bool { return !s.writerRunning() })
	h.dev.In <- in(3)
	recv(t, link.out, "a packet through the writer")
	if !s.writerRunning() {
		t.Fatal("no writer for a link that does not write directly")
	}
	within(t, "RemoveSession", func() { h.tep.RemoveSession(lease2, "s2") })
	writerStopped(t, s)
}

// TestQueueBoundAndOrder: with the link blocked, the queue takes QueueLen
// packets and drops the newest beyond as queue_full; once the link moves,
// the queued packets arrive in order.
func TestQueueBoundAndOrder(t *testing.T) {
	const qlen = 8
	h := newHarness(t, Config{QueueLen: qlen})
	link := newFakeLink(tunnel.Plain)
	link.block, link.entered = make(chan struct{}), make(chan struct{}, 1)
	h.sess.SetLink(link)
	send := func(id byte) {
		p := ipv4(server, lease, packet.ProtoUDP, 100, true, 0)
		p[len(p)-1] = id
		h.dev.In <- p
	}
	send(0) // taken by the writer, which then blocks in the link
	select {
	case <-link.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not reach the link")
	}
	for id := byte(1); id <= qlen+3; id++ {
		send(id)
	}
	waitDrop(t, h.tep, DropQueueFull, 3)
	close(link.block)
	for want := byte(0); want <= qlen; want++ {
		if got := recv(t, link.out, "a queued packet"); got[len(got)-1] != want {
			t.Fatalf("packet %d arrived as number %d", got[len(got)-1], want)
		}
	}
	expectNone(t, link.out, "a packet beyond the queue's bound")
}

// TestRemoveSessionWriterStates removes sessions in each writer state and
// then tries to attach a link: removal must not block, and no writer may
// start (or be left running) afterwards. The harness checks for leaked
// goroutines.
func TestRemoveSessionWriterStates(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *Session)
		close bool // remove with TEP.Close instead of RemoveSession
	}{
		{name: "never linked", setup: func(*Session) {}},
		{name: "linked", setup: func(s *Session) { s.SetLink(newFakeLink(tunnel.Plain)) }},
		{name: "detached", setup: func(s *Session) { s.SetLink(newFakeLink(tunnel.Plain)); s.SetLink(nil) }},
		{name: "never linked, Close", setup: func(*Session) {}, close: true},
		{name: "linked, Close", setup: func(s *Session) { s.SetLink(newFakeLink(tunnel.Plain)) }, close: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			s, err := h.tep.AddSession(SessionInfo{ID: "s2", Lease: lease2, Transport: tunnel.Plain})
			if err != nil {
				t.Fatal(err)
			}
			tt.setup(s)
			s.ReceivePackets([][]byte{ipv4(lease2, server, packet.ProtoUDP, 100, true, 0)})
			recv(t, h.dev.Out, "packet on TUN")
			link := s.link.Load()
			if tt.close {
				within(t, "Close", func() { _ = h.tep.Close() })
			} else {
				within(t, "RemoveSession", func() { h.tep.RemoveSession(lease2, "s2") })
			}
			before := h.tep.Stats().Transports
			tls := newFakeLink(tunnel.TLS)
			s.SetLink(tls)
			writerStopped(t, s)
			noWriter(t, s)
			if s.link.Load() != link {
				t.Fatal("SetLink attached a link to a removed session")
			}
			// The removed session's traffic was retired once; a late
			// transport switch must not count it again.
			if after := h.tep.Stats().Transports; !maps.Equal(after, before) || after[tunnel.Plain].In.Packets != 1 {
				t.Fatalf("traffic after a late SetLink %v, before %v", after, before)
			}
			if !tt.close {
				h.dev.In <- ipv4(server, lease2, packet.ProtoUDP, 100, true, 0)
				waitDrop(t, h.tep, DropNoSession, 1)
			}
			expectNone(t, tls.out, "packet in a removed session's link")
		})
	}
}

// TestSetLinkRace attaches, detaches and re-attaches links while inside
// traffic (queued, or written directly for half the links) and ICMP errors
// towards the clients are being queued, optionally
// removing the sessions at the same time. Run with -race.
func TestSetLinkRace(t *testing.T) {
	const (
		sessions = 32
		rounds   = 40
	)
	for _, remove := range []bool{false, true} {
		name := "links"
		if remove {
			name = "links and removal"
		}
		t.Run(name, func(t *testing.T) {
			goroutines := runtime.NumGoroutine()
			tp, err := New(Config{
				Device: newFakeTUN(1), InnerAddr: inner, Pools: []netip.Prefix{pool}, MTU: 1500,
				ICMPRate: 1e9, ICMPBurst: 1 << 20,
			})
			if err != nil {
				t.Fatal(err)
			}
			ss := make([]*Session, sessions)
			links := make([]*fakeLink, sessions)
			for i := range ss {
				a := netip.AddrFrom4([4]byte{10, 99, 0, byte(10 + i)})
				if ss[i], err = tp.AddSession(SessionInfo{ID: "r", Lease: a, Transport: tunnel.Plain}); err != nil {
					t.Fatal(err)
				}
				links[i] = newFakeLink(tunnel.DTLS)
				links[i].discard = true
				links[i].direct = i%2 == 0 // lone packets written by the inside reader
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			run := func(f func()) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					f()
				}()
			}
			// The inside reader: one goroutine, as routineReadInside.
			run(func() {
				sc := tp.newInsideScratch()
				for range rounds {
					for _, s := range ss {
						tp.handleInside(ipv4(server, s.info.Lease, packet.ProtoUDP, 100, true, 0), sc, 0, true)
					}
				}
			})
			// A transport reader: oversize packets make ICMP errors that
			// are queued towards the client (icmpOutside → enqueue).
			run(func() {
				for range rounds {
					for _, s := range ss {
						s.ReceivePackets([][]byte{ipv4(s.info.Lease, server, packet.ProtoUDP, 1400, true, 0)})
					}
				}
			})
			// The control plane: first link, detach, re-attach.
			run(func() {
				for i, s := range ss {
					s.SetLink(links[i])
					s.SetLink(nil)
					s.SetLink(links[i])
				}
			})
			if remove {
				run(func() {
					for _, s := range ss {
						tp.RemoveSession(s.info.Lease, "r")
					}
				})
			}
			close(start)
			wg.Wait()
			if remove {
				for _, s := range ss {
					if !s.closed.Load() {
						t.Fatal("session not removed")
					}
					writerStopped(t, s)
				}
			} else {
				// Every packet is accounted for once the writers are idle.
				want := uint64(sessions*rounds) + tp.sent.Load()
				accounted := func() uint64 {
					n := tp.drops[DropLinkError].Load() + tp.drops[DropQueueFull].Load()
					for _, l := range links {
						n += l.count.Load()
					}
					return n
				}
				waitFor(t, "writers to drain", func() bool { return accounted() == want })
				if tp.drops[DropNoSession].Load() != 0 || tp.drops[DropTooBig].Load() != sessions*rounds {
					t.Fatalf("drops %v", tp.Stats().Drops)
				}
			}
			within(t, "Close", func() { _ = tp.Close() })
			for _, s := range ss {
				writerStopped(t, s)
			}
			waitGoroutines(t, goroutines)
		})
	}
}

// TestSessionDebugLog checks the session's debug lines and fields, and that
// nothing is built when debug logging is off.
func TestSessionDebugLog(t *testing.T) {
	tests := []struct {
		level zerolog.Level
		lines []string
	}{
		{zerolog.DebugLevel, []string{"session added", "session removed"}}, // writers come and go with traffic, unlogged
		{zerolog.InfoLevel, nil},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			var buf logtest.Sink
			tp, err := New(Config{Device: newFakeTUN(1), InnerAddr: inner, Pools: []netip.Prefix{pool}, Logger: zerolog.New(&buf).Level(tt.level)})
			if err != nil {
				t.Fatal(err)
			}
			defer tp.Close()
			s, err := tp.AddSession(SessionInfo{ID: "s-1", Identity: "alice", Lease: lease, Transport: tunnel.DTLS})
			if err != nil {
				t.Fatal(err)
			}
			e := s.debug()
			if (e == nil) != (tt.level > zerolog.DebugLevel) {
				t.Fatalf("debug() nil = %v at level %v", e == nil, tt.level)
			}
			e.Discard()
			s.SetLink(newFakeLink(tunnel.DTLS))
			tp.RemoveSession(lease, "s-1")
			var msgs []string
			for _, ev := range buf.Lines(t) {
				want := map[string]any{"level": "debug", "session": "s-1", "identity": "alice", "lease_v4": lease.String(), "transport": tunnel.DTLS}
				for k, v := range want {
					if ev[k] != v {
						t.Fatalf("%v: %s = %v, want %v", ev, k, ev[k], v)
					}
				}
				msgs = append(msgs, ev["message"].(string))
			}
			// The writer's lines come from its goroutine; only the set matters.
			if !sameSet(msgs, tt.lines) {
				t.Fatalf("messages %q, want %q", msgs, tt.lines)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		if m[s]--; m[s] < 0 {
			return false
		}
	}
	return true
}
