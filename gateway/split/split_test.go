package split_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore/etcdtest"
	"github.com/dstmgw/dstm/gateway/split"
	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/tunnel"
)

const prefix = "/split-test/"

func open(t *testing.T, c *etcdtest.Cluster, name string, info *etcdstore.TEPInfo) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := etcdstore.Member{TEP: info}
	if info != nil {
		m.Roles = []string{"tep"}
	}
	s, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: prefix, Owner: name, TTL: 2 * time.Second, Member: m})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tepInfo(i int, plain bool) *etcdstore.TEPInfo {
	return &etcdstore.TEPInfo{
		IPv6: netip.AddrFrom16([16]byte{0xfd, 15: byte(i)}), InnerV4: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
		MTU: 1400, DTLSPort: 3653, Plain: plain,
	}
}

// waitFor polls cond (a view kept current by a watch) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func binding(tepName, lease, session string) split.Binding {
	return split.Binding{
		Lease: netip.MustParseAddr(lease), Session: session, Identity: "alice@example.com", TEP: tepName,
		Endpoint: netip.MustParseAddr("2001:db8::1"), TokenHash: split.HashToken([]byte(session)),
	}
}

// TestDirectory: the control node sees the TEPs, picks the least loaded one that serves
// the tunnel type, counts bindings by every control node, and hears when a TEP goes.
func TestDirectory(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctl := open(t, c, "ctl", nil)
	defer ctl.Close()
	t1 := open(t, c, "tep1", tepInfo(1, true))
	defer t1.Close()
	lost := make(chan string, 4)
	d := split.NewDirectory(split.DirectoryConfig{
		Client: ctl.Client(), Prefix: prefix, Members: ctl.MembersPrefix(), Node: "ctl", Owner: ctl,
		Lost: func(name string) { lost <- name }, Log: zerolog.Nop(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	<-d.Ready()
	if got := d.TEPs(); len(got) != 1 || got[0].Name != "tep1" || got[0].IPv6 != tepInfo(1, true).IPv6 {
		t.Fatalf("TEPs %+v, want tep1", got)
	}
	t2 := open(t, c, "tep2", tepInfo(2, false))
	waitFor(t, "tep2 in the directory", func() bool { return len(d.TEPs()) == 2 })

	// Three DTLS sessions: spread by load.
	per := map[string]int{}
	for i, s := range []string{"s-1", "s-2", "s-3", "s-4"} {
		p, err := d.Pick(split.NeedDTLS, "", s)
		if err != nil {
			t.Fatal(err)
		}
		lease := netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).String()
		if err := d.Bind(ctx, binding(p.Name, lease, s), nil); err != nil {
			t.Fatal(err)
		}
		per[p.Name]++
		waitFor(t, "the binding counted", func() bool {
			n := 0
			for _, x := range d.TEPs() {
				n += x.Load
			}
			return n == i+1
		})
	}
	if per["tep1"] != 2 || per["tep2"] != 2 {
		t.Errorf("DTLS sessions per TEP %v, want 2 and 2", per)
	}
	// Plain v4v6 only on tep1, even though it is not the least loaded after this.
	if err := d.Bind(ctx, binding("tep1", "10.0.0.9", "s-9"), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tep1's load 3", func() bool { x, _ := d.Get("tep1"); return x.Load == 3 })
	if p, err := d.Pick(split.NeedPlain, "", "s-5"); err != nil || p.Name != "tep1" {
		t.Errorf("plain pick: %v %v, want tep1", p.Name, err)
	}
	if p, _ := d.Pick(split.NeedDTLS, "", "s-5"); p.Name != "tep2" {
		t.Errorf("DTLS pick %s, want the least loaded tep2", p.Name)
	}
	if p, _ := d.Pick(split.NeedDTLS, "tep1", "s-5"); p.Name != "tep1" {
		t.Errorf("preferred pick %s, want tep1", p.Name)
	}

	// Unbind deletes only what is still ours: a newer session's binding of the lease stays.
	old := binding("tep1", "10.0.0.9", "s-9")
	newer := binding("tep1", "10.0.0.9", "s-10")
	if err := d.Bind(ctx, newer, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Unbind(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := d.Unbind(ctx, newer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tep1's load 2", func() bool { x, _ := d.Get("tep1"); return x.Load == 2 })

	// Moving a binding deletes the previous one in the same transaction.
	moved := binding("tep1", "10.0.0.4", "s-4")
	prev := binding("tep2", "10.0.0.4", "s-4")
	if x, _ := d.Get("tep2"); x.Load != 2 {
		t.Fatalf("tep2 load %d", x.Load)
	}
	if err := d.Bind(ctx, moved, &prev); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the move counted", func() bool { x, _ := d.Get("tep2"); return x.Load == 1 })

	t2.Close()
	select {
	case name := <-lost:
		if name != "tep2" {
			t.Errorf("lost %s, want tep2", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tep2's departure not reported")
	}
	if _, err := d.Pick(split.NeedDTLS, "tep2", "x"); err != nil {
		t.Fatal(err)
	}
	if p, _ := d.Pick(split.NeedDTLS, "tep2", "x"); p.Name != "tep1" {
		t.Errorf("pick after tep2 left: %s", p.Name)
	}
	t1.Close()
	<-lost
	if _, err := d.Pick(split.NeedDTLS, "", "x"); err != split.ErrNoTEP {
		t.Errorf("pick without TEPs: %v, want ErrNoTEP", err)
	}
}

// TestBindingsDieWithTheControlNode: bindings are tied to the control node's ownership
// lease, so a TEP follows a dead control node's sessions out.
func TestBindingsDieWithTheControlNode(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctl := open(t, c, "ctl", nil)
	tn := open(t, c, "tep1", tepInfo(1, true))
	defer tn.Close()
	d := split.NewDirectory(split.DirectoryConfig{Client: ctl.Client(), Prefix: prefix, Members: ctl.MembersPrefix(), Node: "ctl", Owner: ctl, Log: zerolog.Nop()})
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = split.Follow(ctx, split.FollowConfig{Client: tn.Client(), Prefix: prefix, TEP: "tep1", Log: zerolog.Nop()}, rec)
	})
	defer wg.Wait()
	defer cancel()
	rec.wait(t, "the first sync", func(m map[netip.Addr]split.Binding) bool { return rec.syncs > 0 })
	b := binding("tep1", "10.0.0.1", "s-1")
	if err := d.Bind(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "the binding", func(m map[netip.Addr]split.Binding) bool {
		return m[b.Lease].Session == "s-1" && m[b.Lease].Control == "ctl"
	})
	b.Transport = tunnel.Plain
	if err := d.Bind(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "the update", func(m map[netip.Addr]split.Binding) bool { return m[b.Lease].Active() })
	// A binding for another TEP is not delivered here.
	if err := d.Bind(ctx, binding("tep2", "10.0.0.2", "s-2"), nil); err != nil {
		t.Fatal(err)
	}
	ctl.Close() // revokes the ownership lease: its bindings go
	rec.wait(t, "the bindings gone", func(m map[netip.Addr]split.Binding) bool { return len(m) == 0 })
	if rec.others {
		t.Error("a binding of another TEP was delivered")
	}
	if err := d.Bind(ctx, b, nil); err == nil {
		t.Error("Bind without an ownership lease succeeded")
	}
}

// recorder is a Bindings that keeps what Follow delivered.
type recorder struct {
	mu      sync.Mutex
	m       map[netip.Addr]split.Binding
	syncs   int
	others  bool
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{m: map[netip.Addr]split.Binding{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) note(f func()) {
	r.mu.Lock()
	f()
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) Sync(all []split.Binding) {
	r.note(func() {
		r.syncs++
		r.m = map[netip.Addr]split.Binding{}
		for _, b := range all {
			r.m[b.Lease] = b
		}
	})
}

func (r *recorder) Put(b split.Binding) {
	r.note(func() {
		if b.TEP != "tep1" {
			r.others = true
		}
		r.m[b.Lease] = b
	})
}

func (r *recorder) Delete(a netip.Addr) { r.note(func() { delete(r.m, a) }) }

func (r *recorder) wait(t *testing.T, what string, cond func(map[netip.Addr]split.Binding) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.m)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// fakeLink is a tunnel.Link that records what it is asked to send.
type fakeLink struct {
	transport string
	ep        netip.AddrPort
	done      chan struct{}
	once      sync.Once
	mu        sync.Mutex
	sent      [][]byte
}

func newLink(transport string) *fakeLink {
	return &fakeLink{transport: transport, ep: netip.MustParseAddrPort("[2001:db8::1]:4000"), done: make(chan struct{})}
}

func (l *fakeLink) WritePackets(ps [][]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range ps {
		l.sent = append(l.sent, append([]byte(nil), p...))
	}
	return nil
}
func (l *fakeLink) Close() error             { l.once.Do(func() { close(l.done) }); return nil }
func (l *fakeLink) Done() <-chan struct{}    { return l.done }
func (l *fakeLink) Transport() string        { return l.transport }
func (l *fakeLink) Endpoint() netip.AddrPort { return l.ep }
func (l *fakeLink) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// fakePlain is a PlainTransport handing out fakeLinks by endpoint.
type fakePlain struct {
	mu    sync.Mutex
	links map[netip.Addr]*fakeLink
}

func (p *fakePlain) Register(ep netip.Addr, _ tunnel.Receiver) (tunnel.Link, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := newLink(tunnel.Plain)
	p.links[ep] = l
	return l, nil
}

func cert(cn string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, EmailAddresses: []string{cn}}
}

// TestBinder: a TEP admits a data channel only for a bound session (DTLS by data token and
// identity, v4v6 once accepted) and tears it down when the binding goes.
func TestBinder(t *testing.T) {
	dev := tuntest.NewChannelTUN()
	te, err := tep.New(tep.Config{Device: dev.TUN(), InnerAddr: netip.MustParseAddr("192.0.2.1"),
		Pools: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, MTU: 1400, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer te.Close()
	pl := &fakePlain{links: map[netip.Addr]*fakeLink{}}
	bd := split.NewBinder(split.BinderConfig{TEP: te, Plain: pl, MTU: func(string) int { return 1280 }, Log: zerolog.Nop()})
	ctx := context.Background()

	// DTLS: the token must be a bound session's, the certificate its identity's.
	b := binding("tep1", "10.0.0.1", "s-1")
	if _, err := bd.BindDTLS(ctx, []byte("s-1"), cert("alice@example.com"), netip.AddrPort{}, newLink(tunnel.DTLS)); err == nil {
		t.Fatal("DTLS bind before the binding exists succeeded")
	}
	bd.Put(b)
	if _, err := bd.BindDTLS(ctx, []byte("s-2"), cert("alice@example.com"), netip.AddrPort{}, newLink(tunnel.DTLS)); err == nil {
		t.Error("DTLS bind with an unknown token succeeded")
	}
	if _, err := bd.BindDTLS(ctx, []byte("s-1"), cert("mallory@example.com"), netip.AddrPort{}, newLink(tunnel.DTLS)); err == nil {
		t.Error("DTLS bind with another identity's certificate succeeded")
	}
	l1 := newLink(tunnel.DTLS)
	if _, err := bd.BindDTLS(ctx, []byte("s-1"), cert("alice@example.com"), netip.AddrPort{}, l1); err != nil {
		t.Fatal(err)
	}
	if s := te.Session(b.Lease); s == nil || s.Info().ID != "s-1" {
		t.Fatal("no TEP entry after the DTLS bind")
	}
	// A roaming client binds a new link: the old one is closed.
	l2 := newLink(tunnel.DTLS)
	if _, err := bd.BindDTLS(ctx, []byte("s-1"), cert("alice@example.com"), netip.AddrPort{}, l2); err != nil {
		t.Fatal(err)
	}
	if !l1.closed() || l2.closed() {
		t.Error("the replaced link is not closed, or the new one is")
	}
	if len(bd.Routes()) != 0 {
		t.Error("an offered binding is announced")
	}
	b.Transport = tunnel.DTLS
	bd.Put(b)
	if got := bd.Routes(); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}) {
		t.Errorf("routes %v", got)
	}

	// v4v6: the plain link exists once the session is accepted.
	p := binding("tep1", "10.0.0.2", "s-2")
	p.Endpoint = netip.MustParseAddr("2001:db8::2")
	bd.Put(p)
	if te.Session(p.Lease) != nil || len(pl.links) != 0 {
		t.Fatal("a v4v6 tunnel before the accept")
	}
	p.Transport = tunnel.Plain
	bd.Put(p)
	if te.Session(p.Lease) == nil || pl.links[p.Endpoint] == nil {
		t.Fatal("no v4v6 tunnel after the accept")
	}

	// Another session takes the lease: the first one's link goes.
	b2 := binding("tep1", "10.0.0.1", "s-3")
	bd.Put(b2)
	if !l2.closed() || te.Session(b.Lease) != nil {
		t.Error("the replaced session's link or TEP entry is still there")
	}
	if _, err := bd.BindDTLS(ctx, []byte("s-1"), cert("alice@example.com"), netip.AddrPort{}, newLink(tunnel.DTLS)); err == nil {
		t.Error("the replaced session's token still binds")
	}

	// A snapshot without the v4v6 session removes it; Delete removes the other.
	bd.Sync([]split.Binding{b2})
	if te.Session(p.Lease) != nil || !pl.links[p.Endpoint].closed() {
		t.Error("Sync kept a binding that is gone")
	}
	l4 := newLink(tunnel.DTLS)
	if _, err := bd.BindDTLS(ctx, []byte("s-3"), cert("alice@example.com"), netip.AddrPort{}, l4); err != nil {
		t.Fatal(err)
	}
	bd.Delete(b2.Lease)
	if !l4.closed() || te.Session(b2.Lease) != nil {
		t.Error("Delete left the session's link or TEP entry")
	}
	if st := bd.Stats(); st.Bound != 0 || st.Refused != 4 {
		t.Errorf("stats %+v, want nothing bound and 4 refusals", st)
	}

	// Fenced: nothing binds until Unfence.
	bd.Put(b)
	l3 := newLink(tunnel.DTLS)
	if _, err := bd.BindDTLS(ctx, []byte("s-1"), cert("alice@example.com"), netip.AddrPort{}, l3); err != nil {
		t.Fatal(err)
	}
	if n := bd.Fence(); n != 1 || !l3.closed() || te.Session(b.Lease) != nil {
		t.Errorf("Fence ended %d sessions, link closed %v", n, l3.closed())
	}
	bd.Put(b)
	if bd.Stats().Bound != 0 {
		t.Error("a fenced binder took a binding")
	}
	bd.Unfence()
	bd.Put(b)
	if bd.Stats().Bound != 1 {
		t.Error("an unfenced binder refused a binding")
	}
}
