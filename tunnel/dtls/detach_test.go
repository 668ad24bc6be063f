package dtls

import (
	"errors"
	"net"
	"testing"
	"time"
)

// detachedLink binds a link with data records of version 2 and waits until the server has let
// its DTLS state go: no peer, the link in byData alone.
func (f *fixture) detachedLink(t *testing.T, conn net.PacketConn) *testLink {
	t.Helper()
	tl := f.bindLink(t, conn, nil)
	waitFor(t, "the server link to detach, its peer gone", func() bool {
		f.server.mu.RLock()
		peers := len(f.server.peers)
		f.server.mu.RUnlock()
		st := f.server.Stats()
		return tl.sl.detached() && peers == 0 && st.Sessions == 1 && st.DataLinks == 1
	})
	return tl
}

// Once the client accepted version 2, the server lets pion go: no close_notify reaches the
// client (it would end its link), packets keep flowing both ways, and the link roams.
func TestDetachedLinkCarriesOn(t *testing.T) {
	f := newFixture(t, nil)
	rc := NewRebindConn(listenUDP(t))
	tl := f.detachedLink(t, rc)
	for i := range 20 {
		tl.exchange(t, byte(i))
	}
	select {
	case <-tl.cl.Done():
		t.Fatalf("the client link ended: %v", tl.cl.Err())
	default:
	}
	second := listenUDP(t)
	if err := rc.Rebind(second); err != nil {
		t.Fatal(err)
	}
	tl.exchange(t, 30)
	if got, want := tl.sl.Endpoint().Port(), second.LocalAddr().(*net.UDPAddr).AddrPort().Port(); got != want {
		t.Fatalf("server sends to port %d after roaming, want %d", got, want)
	}
	if st := f.server.Stats(); st.Roams == 0 {
		t.Fatalf("roam not counted: %+v", st)
	}
}

// A detached link ends by a close record from either side, by its idle timeout, and with the
// server; the other side sees an orderly end, and the server forgets the session.
func TestDetachedLinkEnds(t *testing.T) {
	tests := []struct {
		name    string
		idle    time.Duration
		end     func(f *fixture, tl *testLink)
		srvErr  error // the server link's Err
		ended   func(tl *testLink) <-chan struct{}
		cliOpen bool // the client link stays (the server's end was not told)
	}{
		{name: "client closes", end: func(_ *fixture, tl *testLink) { tl.cl.Close() }},
		{name: "server closes", end: func(_ *fixture, tl *testLink) { tl.sl.Close() }},
		{name: "server stops", end: func(f *fixture, _ *testLink) { f.server.Close() }},
		{name: "idle", idle: 1500 * time.Millisecond, end: func(*fixture, *testLink) {}, srvErr: ErrIdle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *ServerConfig) { c.IdleTimeout = tc.idle })
			tl := f.detachedLink(t, listenUDP(t))
			tc.end(f, tl)
			waitDone(t, tl.sl.Done(), "server link end")
			waitDone(t, tl.cl.Done(), "client link end")
			if err := tl.sl.Err(); !errors.Is(err, tc.srvErr) {
				t.Fatalf("server link Err = %v, want %v", err, tc.srvErr)
			}
			if err := tl.cl.Err(); err != nil {
				t.Fatalf("client link Err = %v, want an orderly end", err)
			}
			waitFor(t, "the session forgotten", func() bool {
				st := f.server.Stats()
				return st.Sessions == 0 && st.DataLinks == 0
			})
			f.server.mu.RLock()
			n := len(f.server.byData)
			f.server.mu.RUnlock()
			if n != 0 {
				t.Fatalf("%d data-record sessions left", n)
			}
		})
	}
}

// A client of version 1 only (before close records), or a server with KeepDTLS, keeps the
// server's DTLS state: the session still ends by close_notify.
func TestDTLSStateKept(t *testing.T) {
	tests := []struct {
		name     string
		server   func(*ServerConfig)
		client   func(*ClientConfig)
		clientV2 bool // the client accepted version 2
	}{
		{"version 1 client", nil, func(c *ClientConfig) { c.dataVersion = dataV1 }, false},
		{"KeepDTLS server", func(c *ServerConfig) { c.KeepDTLS = true }, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.server)
			tl := f.bindLink(t, listenUDP(t), tc.client)
			waitFor(t, "data records", func() bool { return tl.sl.Stats().DataRecords && tl.cl.Stats().DataRecords })
			// What must not happen: the server detaching after its grace.
			<-time.After(detachGrace + 500*time.Millisecond)
			if tl.sl.detached() || tl.sl.data.v2.Load() || tl.cl.data.v2.Load() != tc.clientV2 {
				t.Fatalf("detached %v, server v2 %v, client v2 %v; want the DTLS state kept, client v2 %v",
					tl.sl.detached(), tl.sl.data.v2.Load(), tl.cl.data.v2.Load(), tc.clientV2)
			}
			for i := range 5 {
				tl.exchange(t, byte(i))
			}
			tl.sl.Close()
			waitDone(t, tl.cl.Done(), "client end (close_notify)")
		})
	}
}

// AfterDone runs its function once the link has ended, whether registered before or after.
func TestAfterDone(t *testing.T) {
	f := newFixture(t, nil)
	tl := f.bindLink(t, listenUDP(t), nil)
	before := make(chan struct{})
	tl.sl.AfterDone(func() { close(before) })
	select {
	case <-before:
		t.Fatal("AfterDone ran while the link was up")
	default:
	}
	tl.sl.Close()
	waitDone(t, before, "AfterDone registered before the end")
	after := make(chan struct{})
	tl.sl.AfterDone(func() { close(after) })
	waitDone(t, after, "AfterDone registered after the end")
}
