package dtls

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tunnel/record"
)

// tapConn records the data records a client sends.
type tapConn struct {
	net.PacketConn
	mu   sync.Mutex
	data [][]byte
}

func (c *tapConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) > 0 && b[0] == record.Type {
		c.mu.Lock()
		c.data = append(c.data, bytes.Clone(b))
		c.mu.Unlock()
	}
	return c.PacketConn.WriteTo(b, addr)
}

func (c *tapConn) last(t *testing.T) []byte {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.data) == 0 {
		t.Fatal("the client sent no data record")
	}
	return c.data[len(c.data)-1]
}

// exchange sends a packet each way and checks that it arrives.
func exchange(t *testing.T, cl *ClientLink, sl *ServerLink, cliRecv, srvRecv *chanReceiver, tag byte) {
	t.Helper()
	if err := cl.WritePackets([][]byte{ipv4Packet(100, tag)}); err != nil {
		t.Fatal(err)
	}
	if got := srvRecv.next(t); got[1] != tag {
		t.Fatalf("server got tag %d, want %d", got[1], tag)
	}
	if err := sl.WritePackets([][]byte{ipv4Packet(100, tag)}); err != nil {
		t.Fatal(err)
	}
	if got := cliRecv.next(t); got[1] != tag {
		t.Fatalf("client got tag %d, want %d", got[1], tag)
	}
}

// testLink is a bound link, both ends and both receivers.
type testLink struct {
	cl               *ClientLink
	sl               *ServerLink
	cliRecv, srvRecv *chanReceiver
}

// bindLink dials a session of alice@corp over conn (cfg changed by tweak) and exchanges a
// packet each way; the link is closed when the test ends.
func (f *fixture) bindLink(t *testing.T, conn net.PacketConn, tweak func(*ClientConfig)) *testLink {
	t.Helper()
	token, srvRecv := f.gw.addSession("alice@corp")
	tl := &testLink{cliRecv: newChanReceiver(), srvRecv: srvRecv}
	cfg := f.clientConfig(t, "alice@corp", token)
	if tweak != nil {
		tweak(&cfg)
	}
	cl, err := f.dial(t, conn, cfg, tl.cliRecv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	tl.cl, tl.sl = cl, f.nextLink(t)
	tl.exchange(t, 1)
	return tl
}

func (tl *testLink) exchange(t *testing.T, tag byte) {
	t.Helper()
	exchange(t, tl.cl, tl.sl, tl.cliRecv, tl.srvRecv, tag)
}

// Data records are agreed when both sides have them; a side without them (an older client or
// gateway, or one configured so) keeps the link on DTLS records, and either way packets flow.
func TestDataRecordNegotiation(t *testing.T) {
	tests := []struct {
		name              string
		serverOff, cliOff bool
		want              bool
	}{
		{"both", false, false, true},
		{"client without", false, true, false},
		{"server without", true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *ServerConfig) { c.NoDataRecords = tc.serverOff })
			tap := &tapConn{PacketConn: listenUDP(t)}
			tl := f.bindLink(t, tap, func(c *ClientConfig) { c.NoDataRecords = tc.cliOff })
			cl, sl := tl.cl, tl.sl
			for i := range 20 {
				tl.exchange(t, byte(i))
			}
			if tc.want {
				waitFor(t, "data records both ways", func() bool {
					return cl.Stats().DataRecords && sl.Stats().DataRecords && f.server.Stats().DataLinks == 1
				})
				tap.last(t)
				if !sl.WritesDirect() {
					t.Fatal("a link on data records does not write directly")
				}
				return
			}
			if sl.WritesDirect() {
				t.Fatal("a link on pion's records writes directly")
			}
			if cl.Stats().DataRecords || sl.Stats().DataRecords || f.server.Stats().DataLinks != 0 {
				t.Fatalf("data records on: client %+v server %+v", cl.Stats(), sl.Stats())
			}
			tap.mu.Lock()
			n := len(tap.data)
			tap.mu.Unlock()
			if n != 0 {
				t.Fatalf("the client sent %d data records", n)
			}
			if tc.cliOff && cl.Stats().DroppedMalformed == 0 {
				t.Fatal("the client without data records did not see the offer")
			}
		})
	}
}

// Forged, replayed, truncated and unknown data records are dropped and counted by reason; none
// of them moves the session or stops it.
func TestBadDataRecords(t *testing.T) {
	f := newFixture(t, nil)
	tap := &tapConn{PacketConn: listenUDP(t)}
	tl := f.bindLink(t, tap, nil)
	sl, srvRecv := tl.sl, tl.srvRecv
	waitFor(t, "data records", func() bool { return sl.Stats().DataRecords })
	tl.exchange(t, 2)
	good := tap.last(t)
	endpoint := sl.Endpoint()

	attacker := netip.MustParseAddrPort("[2001:db8::66]:4444")
	unknown := bytes.Clone(good)
	unknown[1] ^= 0xff
	forged := bytes.Clone(good)
	forged[len(forged)-1] ^= 1
	ahead := bytes.Clone(good)
	ahead[5] = 0x7f // a counter far ahead: another epoch, and it does not authenticate anyway
	for _, b := range [][]byte{
		good,                     // replayed, from the attacker
		good,                     // and again
		unknown,                  // no such session
		forged,                   // bad tag
		ahead,                    // a key derived for it, and it does not authenticate
		good[:record.Overhead-1], // truncated
		{record.Type},            // a type byte alone
	} {
		f.server.HandleDatagram(bytes.Clone(b), attacker)
	}
	f.server.HandleDatagram(bytes.Clone(good), endpoint) // replayed from the client's address
	st := f.server.Stats()
	if st.DataDroppedReplayed != 3 || st.DataDroppedUnknown != 1 || st.DataDroppedForged != 2 || st.DataDroppedShort != 2 {
		t.Fatalf("drops %+v", st)
	}
	ls := sl.Stats()
	if ls.DroppedReplayed != 3 || ls.DroppedForged != 2 {
		t.Fatalf("link drops %+v", ls)
	}
	select {
	case p := <-srvRecv.ch:
		t.Fatalf("a bad record was delivered: % x", p[:8])
	default:
	}
	if got := sl.Endpoint(); got != endpoint {
		t.Fatalf("the session moved to %v", got)
	}
	tl.exchange(t, 3)
	allocs := testing.AllocsPerRun(100, func() { f.server.HandleDatagram(unknown, attacker) })
	if allocs != 0 {
		t.Fatalf("a record for an unknown session costs %v allocations", allocs)
	}
}

// A link that only carries data records is not idle.
func TestDataRecordsKeepLinkAlive(t *testing.T) {
	const idle = 300 * time.Millisecond
	f := newFixture(t, func(c *ServerConfig) { c.IdleTimeout = idle })
	tl := f.bindLink(t, listenUDP(t), nil)
	cl, sl, srvRecv := tl.cl, tl.sl, tl.srvRecv
	waitFor(t, "data records", func() bool { return cl.Stats().DataRecords })
	tick := time.NewTicker(idle / 15)
	defer tick.Stop()
	end := time.After(4 * idle)
	for i := 0; ; i++ {
		select {
		case <-end:
			select {
			case <-sl.Done():
				t.Fatalf("the link ended: %v", sl.Err())
			default:
			}
			// Without traffic, it ends.
			waitDone(t, sl.Done(), "the idle link's end")
			return
		case <-sl.Done():
			t.Fatalf("the link ended with data records flowing: %v", sl.Err())
		case <-tick.C:
			if err := cl.WritePackets([][]byte{ipv4Packet(60, byte(i))}); err != nil {
				t.Fatal(err)
			}
			srvRecv.next(t)
		}
	}
}

// swallowConn sends everything but data records while swallow is set, which it keeps.
type swallowConn struct {
	net.PacketConn
	mu      sync.Mutex
	swallow bool
	kept    [][]byte
}

func (c *swallowConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	keep := c.swallow && len(b) > 0 && b[0] == record.Type
	if keep {
		c.kept = append(c.kept, bytes.Clone(b))
	}
	c.mu.Unlock()
	if keep {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// In a batch (udpmux.BatchHandler), the packets of data records reach the link's receiver
// together, in order, at EndBatch.
func TestDataRecordBatch(t *testing.T) {
	f := newFixture(t, nil)
	sw := &swallowConn{PacketConn: listenUDP(t)}
	tl := f.bindLink(t, sw, nil)
	cl, sl, srvRecv := tl.cl, tl.sl, tl.srvRecv
	waitFor(t, "data records", func() bool { return cl.Stats().DataRecords })
	from := sl.Endpoint()
	sw.mu.Lock()
	sw.swallow = true
	sw.mu.Unlock()
	const n = 5
	for i := range n {
		if err := cl.WritePackets([][]byte{ipv4Packet(80, byte(10+i))}); err != nil {
			t.Fatal(err)
		}
	}
	sw.mu.Lock()
	kept := sw.kept
	sw.mu.Unlock()
	if len(kept) != n {
		t.Fatalf("%d data records kept, want %d", len(kept), n)
	}
	for _, b := range kept {
		f.server.HandleBatchDatagram(b, from)
	}
	select {
	case p := <-srvRecv.ch:
		t.Fatalf("packet %d delivered before the batch ended", p[1])
	default:
	}
	f.server.EndBatch()
	for i := range n {
		select {
		case p := <-srvRecv.ch:
			if p[1] != byte(10+i) {
				t.Fatalf("packet %d: tag %d", i, p[1])
			}
		default:
			t.Fatalf("packet %d not delivered at the end of the batch", i)
		}
	}
}
