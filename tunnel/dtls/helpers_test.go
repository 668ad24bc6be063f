package dtls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/udpmux"
)

const testTimeout = 10 * time.Second

// testCA is a throw-away certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue mints a leaf certificate for cn (a server name when server).
func (ca *testCA) issue(t testing.TB, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{cn}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// chanReceiver records packets, copied as the Receiver contract requires.
type chanReceiver struct{ ch chan []byte }

func newChanReceiver() *chanReceiver { return &chanReceiver{ch: make(chan []byte, 4096)} }

func (r *chanReceiver) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		r.receive(p)
	}
}

func (r *chanReceiver) receive(pkt []byte) {
	select {
	case r.ch <- bytes.Clone(pkt):
	default:
	}
}

func (r *chanReceiver) next(t testing.TB) []byte {
	t.Helper()
	select {
	case p := <-r.ch:
		return p
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a packet")
		return nil
	}
}

// tspHandler records TSP datagrams arriving on the mux.
type tspHandler struct{ ch chan []byte }

func (h *tspHandler) HandleDatagram(b []byte, _ netip.AddrPort) { h.ch <- bytes.Clone(b) }

// session is what the fake gateway knows about one TSP session.
type session struct {
	identity string
	recv     *chanReceiver
}

// gateway is the test's stand-in for the real session registry: Bind
// checks the token and the certificate identity, as the brief requires.
type gateway struct {
	mu       sync.Mutex
	sessions map[string]*session // by token
	links    chan *ServerLink
	// recvOverride, when set, receives every bound session's packets.
	recvOverride tunnel.Receiver
}

var errUnknownToken = errors.New("unknown token")

func (g *gateway) bind(_ context.Context, token []byte, cert *x509.Certificate, _ netip.AddrPort, link tunnel.Link) (tunnel.Receiver, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[string(token)]
	if s == nil {
		return nil, errUnknownToken
	}
	if cert.Subject.CommonName != s.identity {
		return nil, errors.New("identity mismatch")
	}
	g.links <- link.(*ServerLink)
	if g.recvOverride != nil {
		return g.recvOverride, nil
	}
	return s.recv, nil
}

func (g *gateway) addSession(identity string) ([]byte, *chanReceiver) {
	token := make([]byte, tsp.TokenLen)
	_, _ = rand.Read(token)
	r := newChanReceiver()
	g.mu.Lock()
	g.sessions[string(token)] = &session{identity: identity, recv: r}
	g.mu.Unlock()
	return token, r
}

// fixture is a DTLS server behind a real udpmux on loopback. What the server sends to
// testNets goes to sink instead: tests inject datagrams from there with HandleDatagram.
type fixture struct {
	ca, otherCA *testCA
	server      *Server
	mux         *udpmux.Mux
	addr        netip.AddrPort
	gw          *gateway
	tsp         *tspHandler
	sink        chan sent
}

// testNets are documentation prefixes, the homes of the sources tests make up.
var testNets = []netip.Prefix{netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.0/24")}

func inTestNet(a netip.Addr) bool {
	return testNets[0].Contains(a) || testNets[1].Contains(a.Unmap())
}

func listenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	for _, a := range []string{"[::1]:0", "127.0.0.1:0"} {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(a)))
		if err == nil {
			return c
		}
	}
	t.Skip("no loopback UDP")
	return nil
}

func newFixture(t testing.TB, tweak func(*ServerConfig)) *fixture {
	t.Helper()
	return newFixtureSockets(t, tweak, 1)
}

// newFixtureSockets is newFixture with the server's port on n sockets (SO_REUSEPORT), as the
// gateway has it.
func newFixtureSockets(t testing.TB, tweak func(*ServerConfig), n int) *fixture {
	t.Helper()
	base := runtime.NumGoroutine()
	f := &fixture{
		ca:      newTestCA(t, "dstm test root"),
		otherCA: newTestCA(t, "other root"),
		gw:      &gateway{sessions: map[string]*session{}, links: make(chan *ServerLink, 16)},
		tsp:     &tspHandler{ch: make(chan []byte, 16)},
		sink:    make(chan sent, 4096),
	}
	serverCert := f.ca.issue(t, "gw.test", true)
	conns := []*net.UDPConn{listenUDP(t)}
	if n > 1 {
		conns[0].Close()
		conns = listenReusePort(t, n)
	}
	f.addr = conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
	var mux *udpmux.Mux
	cfg := ServerConfig{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil },
		ClientCAs:      f.ca.pool,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 {
				return errors.New("no verified chain")
			}
			return nil
		},
		Bind: f.gw.bind,
		Write: func(b []byte, to netip.AddrPort) error {
			if inTestNet(to.Addr()) {
				select {
				case f.sink <- sent{bytes.Clone(b), to}:
				default:
				}
				return nil
			}
			return mux.WriteTo(b, to)
		},
		HandshakeTimeout: 5 * time.Second,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.server = srv
	mux, err = udpmux.New(udpmux.Config{TSP: f.tsp, DTLS: srv}, conns...)
	if err != nil {
		t.Fatal(err)
	}
	f.mux = mux
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mux.Run(ctx) }()
	t.Cleanup(func() {
		_ = srv.Close()
		cancel()
		<-done
		waitGoroutines(t, base)
	})
	return f
}

func (f *fixture) clientConfig(t testing.TB, identity string, token []byte) ClientConfig {
	return ClientConfig{
		Certificates: []tls.Certificate{f.ca.issue(t, identity, false)},
		RootCAs:      f.ca.pool,
		ServerName:   "gw.test",
		Token:        token,
	}
}

func (f *fixture) dial(t testing.TB, conn net.PacketConn, cfg ClientConfig, r tunnel.Receiver) (*ClientLink, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return Dial(ctx, conn, f.addr, cfg, r)
}

func (f *fixture) nextLink(t testing.TB) *ServerLink {
	t.Helper()
	select {
	case l := <-f.gw.links:
		return l
	case <-time.After(testTimeout):
		t.Fatal("no server link bound")
		return nil
	}
}

// waitFor polls cond until it holds or the test times out.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(testTimeout)
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

func waitGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.After(testTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > want {
		select {
		case <-tick.C:
		case <-deadline:
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
	}
}

// ipv4Packet returns an n-byte packet that passes the IPv4 check.
func ipv4Packet(n int, fill byte) []byte {
	p := bytes.Repeat([]byte{fill}, n)
	p[0] = 0x45
	return p
}

func waitDone(t testing.TB, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// sent returns the next datagram the server sent to to, skipping others.
func (f *fixture) sent(t testing.TB, to netip.AddrPort) []byte {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case s := <-f.sink:
			if s.to == to {
				return s.b
			}
		case <-deadline:
			t.Fatalf("nothing sent to %v", to)
			return nil
		}
	}
}

// cookieFor sends hello from from and returns the cookie of the HelloVerifyRequest that
// answers it.
func (f *fixture) cookieFor(t testing.TB, hello []byte, from netip.AddrPort) []byte {
	t.Helper()
	f.server.HandleDatagram(hello, from)
	b := f.sent(t, from)
	cookie, ok := parseHelloVerify(b)
	if !ok {
		t.Fatalf("answer to a ClientHello is not a HelloVerifyRequest: %x", b)
	}
	return bytes.Clone(cookie)
}

// withCookie returns hello with cookie in it.
func withCookie(t testing.TB, hello, cookie []byte) []byte {
	t.Helper()
	h, ok := parseClientHello(hello)
	if !ok {
		t.Fatalf("not a ClientHello: %x", hello)
	}
	b, ok := appendWithCookie(nil, hello, h, cookie)
	if !ok {
		t.Fatal("cookie does not fit")
	}
	return b
}

// sources returns n addresses of 2001:db8::/32, each in its own /64 and its own reply
// bucket, none sharing a bucket with avoid.
func (f *fixture) sources(n int, avoid ...netip.Addr) []netip.Addr {
	taken := append([]netip.Addr(nil), avoid...)
	var out []netip.Addr
	for i := 1; len(out) < n; i++ {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(i >> 8), byte(i), 15: 1})
		if !slices.ContainsFunc(taken, func(b netip.Addr) bool { return f.server.replies.sources.Shared(a, b) }) {
			taken = append(taken, a)
			out = append(out, a)
		}
	}
	return out
}

// listenReusePort binds n loopback UDP sockets to one port with SO_REUSEPORT.
func listenReusePort(t testing.TB, n int) []*net.UDPConn {
	t.Helper()
	lc := net.ListenConfig{Control: udpmux.ReusePort}
	addr := "[::1]:0"
	var conns []*net.UDPConn
	for range n {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, pc.(*net.UDPConn))
		addr = pc.LocalAddr().String()
	}
	return conns
}
