package control

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/internal/testclock"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
)

const waitTimeout = 10 * time.Second

// harness is a control plane with a real lease manager (in-memory store) and a real TEP on an
// in-memory TUN device, without sockets: tests drive sessions through their backends.
type harness struct {
	srv    *Server
	leases *lease.Manager
	tep    *tep.TEP
	clk    *testclock.Clock
	plain  *fakePlain
}

var testPool = netip.MustParsePrefix("100.64.0.0/24")

// harnessOptions change the harness's defaults.
type harnessOptions struct {
	maxSessions int           // per identity (4 when 0)
	server      func(*Server) // adjusts the server before it runs
}

func newHarness(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	if opts.maxSessions == 0 {
		opts.maxSessions = 4
	}
	clk := testclock.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	gw := config.Default()
	gw.Policy.Default.Transports = []string{tunnel.Plain, tunnel.DTLS, tunnel.TLS}
	m, err := lease.New(lease.Config{
		Pools:        []lease.PoolConfig{{Name: "default", Prefixes: []netip.Prefix{testPool}, Exclude: []netip.Prefix{netip.PrefixFrom(gw.TEP.InnerV4, 32)}}},
		OfferTimeout: 30 * time.Second, Lifetime: time.Hour, HoldTime: time.Hour, MaxSessions: opts.maxSessions,
		Now: clk.Now,
	}, lease.NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	te, err := tep.New(tep.Config{Device: tuntest.NewChannelTUN().TUN(), InnerAddr: gw.TEP.InnerV4, Pools: []netip.Prefix{testPool}, MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := auth.NewPolicy(gw.Policy)
	if err != nil {
		t.Fatal(err)
	}
	plain := &fakePlain{links: map[netip.Addr]*fakeLink{}}
	srv, err := New(Config{
		Gateway: gw, Leases: m, TEP: te, Plain: plain, DTLS: true, DataPort: 3653,
		Policy: auth.NewPolicyHolder(pol), TLS: &tls.Config{}, Logger: zerolog.Nop(),
		Now: time.Now, // deadlines on real connections; leases follow clk
	})
	if err != nil {
		t.Fatal(err)
	}
	if opts.server != nil {
		opts.server(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = te.Run(ctx) }()
	t.Cleanup(func() {
		srv.EndAll(lease.ReasonClosed)
		cancel()
		te.Close()
		<-done
	})
	return &harness{srv: srv, leases: m, tep: te, clk: clk, plain: plain}
}

// fakeLink is a link that carries nothing; onClose runs once when it is closed.
type fakeLink struct {
	transport string
	endpoint  netip.AddrPort
	done      chan struct{}
	once      sync.Once
	onClose   func()
}

func newFakeLink() *fakeLink {
	return &fakeLink{transport: tunnel.DTLS, endpoint: netip.MustParseAddrPort("[2001:db8::7]:40000"), done: make(chan struct{})}
}

func (l *fakeLink) WritePackets([][]byte) error { return nil }
func (l *fakeLink) Done() <-chan struct{}       { return l.done }
func (l *fakeLink) Transport() string           { return l.transport }
func (l *fakeLink) Endpoint() netip.AddrPort    { return l.endpoint }
func (l *fakeLink) Close() error {
	l.once.Do(func() {
		close(l.done)
		if l.onClose != nil {
			l.onClose()
		}
	})
	return nil
}

// fakePlain registers one link per endpoint, as plain.Server does.
type fakePlain struct {
	mu    sync.Mutex
	links map[netip.Addr]*fakeLink
}

func (p *fakePlain) Register(ep netip.Addr, _ tunnel.Receiver) (tunnel.Link, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.links[ep] != nil {
		return nil, fmt.Errorf("plain: endpoint already registered: %s", ep)
	}
	l := &fakeLink{transport: tunnel.Plain, endpoint: netip.AddrPortFrom(ep, 0), done: make(chan struct{})}
	l.onClose = func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.links[ep] == l {
			delete(p.links, ep)
		}
	}
	p.links[ep] = l
	return l, nil
}

// plainSession runs a v4v6 session of identity from the client endpoint ep up to its accept
// and returns its backend and the create's error.
func (h *harness) plainSession(t *testing.T, identity string, ep netip.Addr) (*backend, error) {
	t.Helper()
	ss := h.srv.newSession("udp", netip.AddrPortFrom(ep, 3653), "", nil)
	if !h.srv.sessions.add(ss, 100) {
		t.Fatal("session refused")
	}
	b := &backend{srv: h.srv, ss: ss}
	id := tsp.Identity{Name: identity}
	ctx := context.Background()
	offer, err := b.Create(ctx, id, &tsp.Tunnel{Type: tsp.TypeV4V6, Client: &tsp.ClientInfo{IPv6: ep}})
	if err != nil {
		h.srv.end(ss, lease.ReasonClosed)
		return b, err
	}
	if err := b.Accept(ctx, id, offer, tsp.TypeV4V6); err != nil {
		t.Fatalf("accept: %v", err)
	}
	return b, nil
}

// dtlsSession creates a TSP-SSL session for identity over its backend, gets an offer, and
// binds a DTLS link to it as the DTLS server does; with accept it also accepts the offer.
func (h *harness) dtlsSession(t *testing.T, identity string, accept bool) (*backend, *fakeLink) {
	t.Helper()
	remote := netip.MustParseAddrPort("[2001:db8::7]:50000")
	ss := h.srv.newSession("tls", remote, "", func() {})
	if !h.srv.sessions.add(ss, 100) {
		t.Fatal("session refused")
	}
	b := &backend{srv: h.srv, ss: ss}
	id := tsp.Identity{Name: identity}
	ctx := context.Background()
	offer, err := b.Create(ctx, id, &tsp.Tunnel{Type: tsp.TypeV4DTLSV6, Client: &tsp.ClientInfo{IPv6: remote.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	link := newFakeLink()
	ts, err := h.srv.dataEntry(ss, tunnel.DTLS, dtlsMTU)
	if err != nil {
		t.Fatal(err)
	}
	if err := attach(ss, ts, link); err != nil {
		t.Fatal(err)
	}
	if accept {
		if err := b.Accept(ctx, id, offer, tsp.TypeV4DTLSV6); err != nil {
			t.Fatal(err)
		}
	}
	return b, link
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// follow subscribes to lease events now and follows them until ctx ends.
func (h *harness) follow(ctx context.Context) {
	dropped := h.leases.DroppedEvents()
	ch, cancel := h.leases.Subscribe(h.srv.eventBuffer)
	go func() {
		defer cancel()
		_ = h.srv.followLeases(ctx, ch, dropped)
	}()
}
