package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel/tlsrec"
)

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

// testGW is one in-process gateway on loopback with an in-memory TUN device.
type testGW struct {
	g     *gateway.Gateway
	cfg   config.Config
	tun   *tuntest.ChannelTUN
	fromG chan []byte // packets the gateway wrote to its TUN device
	tcp   string      // host:port of the TSP port (TCP)
	udp   *net.UDPAddr
	admin *admin.Client
	// stop stops the gateway as SIGTERM does and closes it (its state files are free then);
	// it runs at the end of the test if the test did not call it, before the checks that
	// nothing was left running or open.
	stop func()
}

// startGateway runs a gateway configured by the defaults, loopback listeners, plain TSP and
// ANONYMOUS, then mutate. It is stopped (and checked to stop cleanly) at the end of the test.
func startGateway(tb testing.TB, mutate func(*config.Config)) *testGW {
	tb.Helper()
	return startGatewayWithLog(tb, mutate, zerolog.Nop())
}

// startGatewayWithLog is startGateway with the gateway logging to log.
func startGatewayWithLog(tb testing.TB, mutate func(*config.Config), log zerolog.Logger) *testGW {
	tb.Helper()
	return startGatewayLeakCheck(tb, mutate, log, true)
}

// startGatewayLeakCheck is startGatewayWithLog; checkLeaks false leaves out the check that
// goroutines and file descriptors are back to their count before the start (for a second
// gateway in the same process: the first one's check covers both).
func startGatewayLeakCheck(tb testing.TB, mutate func(*config.Config), log zerolog.Logger, checkLeaks bool) *testGW {
	tb.Helper()
	cfg := config.Default()
	cfg.StateDir = tb.TempDir()
	// The admin socket path must fit in sun_path: keep it short.
	sockDir, err := os.MkdirTemp("", "dstmgw")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg.Admin.Socket = filepath.Join(sockDir, "admin.sock")
	cfg.Listen.Addresses = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}
	cfg.Listen.PlainTSP = true
	cfg.TSP.Anonymous = true
	if mutate != nil {
		mutate(&cfg)
	}
	// A state directory with a CA is a restart (mutate set the StateDir of an earlier gateway).
	if _, err := os.Stat(filepath.Join(cfg.StateDir, gateway.CADir)); os.IsNotExist(err) {
		ca, err := certs.Init(filepath.Join(cfg.StateDir, gateway.CADir), gateway.CAOptions(cfg, zerolog.Nop(), time.Now))
		if err != nil {
			tb.Fatal(err)
		}
		ca.Close()
	}
	baseline := gatewayGoroutines()
	fdBaseline := openFDs(tb)
	tt := tuntest.NewChannelTUN()
	g, err := gateway.New(cfg, log, gateway.Options{Version: "test", Device: tt.TUN()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	gw := &testGW{g: g, cfg: cfg, tun: tt, fromG: make(chan []byte, 1024), admin: admin.NewClient(cfg.Admin.Socket)}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-ctx.Done():
				return
			case p := <-tt.Inbound:
				select {
				case gw.fromG <- p:
				default: // the test does not read: drop
				}
			}
		}
	}()
	var stopOnce sync.Once
	gw.stop = func() {
		stopOnce.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run returned %v", err)
				}
			case <-time.After(waitTimeout):
				tb.Errorf("Run did not return within %v of cancel", waitTimeout)
			}
			<-drained
			gw.admin.Close()
			if err := g.Close(); err != nil {
				tb.Errorf("Close: %v", err)
			}
		})
	}
	// Registered first, run last: after the test's own cleanups closed its connections.
	tb.Cleanup(func() {
		gw.stop()
		if checkLeaks {
			checkGoroutines(tb, baseline)
			checkFDs(tb, fdBaseline)
		}
	})
	select {
	case <-g.Ready():
	case err := <-done:
		done <- err // for stop
		tb.Fatalf("Run ended before Ready: %v", err)
	case <-time.After(waitTimeout):
		tb.Fatal("gateway not ready")
	}
	// Ready does not cover the admin socket (bound by its own goroutine): wait for it.
	eventually(tb, "the admin socket", func() (bool, error) {
		_, err := gw.admin.Status(testCtx(tb))
		return err == nil, err
	})
	tcps, udps := g.ListenAddrs()
	if len(tcps) > 0 { // a TEP node has no TCP port
		gw.tcp = tcps[0].String()
	}
	if len(udps) > 0 {
		gw.udp = udps[0].(*net.UDPAddr)
	}
	return gw
}

// openFDs counts this process's open file descriptors.
func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// checkFDs fails the test when the gateway left file descriptors open (sockets, the TUN
// device, store files) after it stopped.
func checkFDs(tb testing.TB, baseline int) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for n := openFDs(tb); n > baseline; n = openFDs(tb) {
		if time.Now().After(deadline) {
			tb.Errorf("%d file descriptors open after the gateway stopped, %d before it started", n, baseline)
			return
		}
		<-time.After(10 * time.Millisecond)
	}
}

// checkGoroutines fails the test when more goroutines than baseline are still running a
// while after the gateway stopped.
func checkGoroutines(tb testing.TB, baseline int) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for n := gatewayGoroutines(); n > baseline; n = gatewayGoroutines() {
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			tb.Errorf("%d goroutines after the gateway stopped, %d before it started (an embedded etcd's own not counted):\n%s", n, baseline, buf.String())
			return
		}
		runtime.Gosched()
		<-time.After(10 * time.Millisecond)
	}
}

// etcdServerFrames mark the goroutines of an embedded etcd member (etcdtest): it starts and
// ends its own as it likes (log purges, schedulers, its gRPC gateway), independently of the
// gateway under test.
var etcdServerFrames = []string{"go.etcd.io/etcd/server/", "go.etcd.io/raft/", "go.etcd.io/etcd/pkg/v3/schedule",
	"github.com/soheilhy/cmux", "fileutil.purgeFile", "grpcsync.(*CallbackSerializer)"}

// gatewayGoroutines counts the goroutines, without an embedded etcd member's.
func gatewayGoroutines() int {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	n := 0
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		if !slices.ContainsFunc(etcdServerFrames, func(f string) bool { return strings.Contains(g, f) }) {
			n++
		}
	}
	return n
}

// testCtx returns a context ending with the test.
func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the wait times out.
func eventually(tb testing.TB, what string, cond func() (bool, error)) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		}
		<-tick.C
	}
}

// leaseOf returns the admin API's view of the lease of addr.
func (gw *testGW) leaseOf(ctx context.Context, addr netip.Addr) (admin.Lease, bool, error) {
	ls, err := gw.admin.Leases(ctx)
	if err != nil {
		return admin.Lease{}, false, err
	}
	for _, l := range ls {
		if l.Addr == addr.String() {
			return l, true, nil
		}
	}
	return admin.Lease{}, false, nil
}

// waitLeaseState waits until the admin API shows addr in state.
func (gw *testGW) waitLeaseState(tb testing.TB, addr netip.Addr, state string) admin.Lease {
	tb.Helper()
	ctx := testCtx(tb)
	var got admin.Lease
	eventually(tb, fmt.Sprintf("lease %s %s", addr, state), func() (bool, error) {
		l, ok, err := gw.leaseOf(ctx, addr)
		got = l
		if err == nil && (!ok || l.State != state) {
			err = fmt.Errorf("lease %+v (found %v)", l, ok)
		}
		return ok && l.State == state, err
	})
	return got
}

// streamSession drives a tsp.Client over a stream connection until the client is
// established, has an offer (DeferAccept) or fails. It returns the splitter so callers can
// keep reading.
func streamSession(c net.Conn, m *tsp.Client) (*tsp.Splitter, error) {
	sp := tsp.NewSplitter(0)
	replies, err := m.Start()
	if err != nil {
		return sp, err
	}
	buf := make([]byte, 4096)
	for {
		if err := writeReplies(c, replies); err != nil {
			return sp, err
		}
		switch m.State() {
		case tsp.ClientEstablished, tsp.ClientOffered:
			return sp, nil
		}
		msg, err := nextMessage(c, sp, buf)
		if err != nil {
			return sp, err
		}
		if replies, err = m.Step(msg); err != nil {
			return sp, err
		}
	}
}

func writeReplies(c net.Conn, replies []tsp.Reply) error {
	for _, r := range replies {
		if len(r.Payload) == 0 {
			continue
		}
		if _, err := c.Write(r.Payload); err != nil {
			return err
		}
	}
	return nil
}

// nextMessage reads one complete TSP message from a stream.
func nextMessage(c net.Conn, sp *tsp.Splitter, buf []byte) ([]byte, error) {
	for {
		msg, ok, err := sp.Next()
		if err != nil || ok {
			return msg, err
		}
		n, err := c.Read(buf)
		_, _ = sp.Write(buf[:n])
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

// udpRTO and udpTries are the client's retransmission rules (gogoc: RTO 2 s, 3 sends before
// a first reply).
const (
	udpRTO   = time.Second
	udpTries = 3
)

// udpSession drives a tsp.Client over UDP datagrams with gogoc's header (sequence from 0xF0),
// one datagram per client message and exactly one reply datagram each, retransmitting an
// unanswered datagram with the same sequence. It returns the number of messages exchanged.
func udpSession(c net.Conn, m *tsp.Client) (int, error) {
	return udpSessionBuf(c, m, make([]byte, tsp.HeaderLen+tsp.MaxDatagramPayload))
}

// udpSessionBuf is udpSession reading into buf (at least tsp.HeaderLen+tsp.MaxDatagramPayload
// bytes), for a benchmark client that reuses one buffer.
func udpSessionBuf(c net.Conn, m *tsp.Client, buf []byte) (int, error) {
	replies, err := m.Start()
	if err != nil {
		return 0, err
	}
	for n := 0; ; n++ {
		if len(replies) != 1 {
			return n, fmt.Errorf("client produced %d messages for one datagram", len(replies))
		}
		h := tsp.Header{Seq: 0xF0 + uint32(n), Timestamp: uint32(n)}
		payload, err := udpRoundTrip(c, h, replies[0].Payload, buf)
		if err != nil {
			return n, err
		}
		if replies, err = m.Step(payload); err != nil {
			return n, err
		}
		if m.State() == tsp.ClientEstablished {
			return n + 1, nil
		}
	}
}

// udpRoundTrip sends one datagram until the reply with its header arrives.
func udpRoundTrip(c net.Conn, h tsp.Header, payload, buf []byte) ([]byte, error) {
	d := tsp.AppendDatagram(nil, h, payload)
	for try := 0; try < udpTries; try++ {
		if _, err := c.Write(d); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(udpRTO))
		for {
			k, err := c.Read(buf)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				break // retransmit
			}
			if err != nil {
				return nil, err
			}
			got, p, err := tsp.ParseDatagram(buf[:k])
			if err != nil {
				return nil, err
			}
			if got == h {
				return p, nil
			}
		}
	}
	return nil, fmt.Errorf("no reply to sequence %#x after %d sends", h.Seq, udpTries)
}

// rawExchange writes b on c and reads whatever arrives until the reply looks complete to
// done or the connection ends.
func rawExchange(tb testing.TB, c net.Conn, b []byte, done func([]byte) bool) []byte {
	tb.Helper()
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			tb.Fatalf("write: %v", err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	var out []byte
	buf := make([]byte, 4096)
	for !done(out) {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			break
		}
	}
	return out
}

// lineDone is complete after one CRLF-terminated line.
func lineDone(b []byte) bool { return bytes.HasSuffix(b, []byte("\r\n")) }

// contentDone is complete after a whole Content-length framed message.
func contentDone(b []byte) bool {
	_, err := tsp.ParseContent(b)
	return err == nil
}

// dialTCP connects to the gateway's TCP port.
func (gw *testGW) dialTCP(tb testing.TB) net.Conn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", gw.tcp, waitTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// dialTCPFrom connects to the TSP port from the local address src (any of 127/8 on loopback).
func (gw *testGW) dialTCPFrom(tb testing.TB, src netip.Addr) net.Conn {
	tb.Helper()
	d := net.Dialer{Timeout: waitTimeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	c, err := d.Dial("tcp", gw.tcp)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// enrollIdentity enrolls a client certificate for identity through the gateway's real
// enrollment API (TLS with ALPN http/1.1 on the TSP port), with a token from the admin API.
func (gw *testGW) enrollIdentity(tb testing.TB, identity string) *enroll.State {
	tb.Helper()
	return gw.enrollIdentityIn(tb, identity, filepath.Join(tb.TempDir(), "client"))
}

// enrollIdentityIn is enrollIdentity with the client's state in dir.
func (gw *testGW) enrollIdentityIn(tb testing.TB, identity, dir string) *enroll.State {
	tb.Helper()
	ctx := testCtx(tb)
	tok, err := gw.admin.Token(ctx, identity, time.Hour)
	if err != nil {
		tb.Fatalf("token: %v", err)
	}
	st, err := enroll.Enroll(ctx, enroll.Options{
		Gateway: gw.tcp, ServerName: "localhost", Token: tok.Token, StateDir: dir,
	})
	if err != nil {
		tb.Fatalf("enroll %s: %v", identity, err)
	}
	if st.Identity != identity {
		tb.Fatalf("enrolled identity %q, want %q", st.Identity, identity)
	}
	return st
}

// dialTLS opens TSP-SSL with ALPN tsp/2 and the enrolled certificate (nil: none).
func (gw *testGW) dialTLS(ctx context.Context, st *enroll.State, roots *enroll.State) (*tls.Conn, error) {
	var cfg *tls.Config
	if st != nil {
		cfg = st.ClientTLSConfig("localhost", "tsp/2")
	} else {
		cfg = roots.ClientTLSConfig("localhost", "tsp/2")
		cfg.Certificates = nil
	}
	cfg.MinVersion = tls.VersionTLS13
	d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: waitTimeout}}
	c, err := d.DialContext(ctx, "tcp", gw.tcp)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	// TLS 1.3: the server verifies the client certificate after the client's handshake
	// ends; a refusal arrives as an alert on the first read.
	return tc, nil
}

// dialTLSRec opens TSP-SSL as dstm-client does, offering tlsrec.ALPN, and checks that the
// gateway took the records over.
func (gw *testGW) dialTLSRec(t testing.TB, st *enroll.State) net.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", gw.tcp, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.ClientTLSConfig("localhost", tlsrec.ALPN, "tsp/2")
	cfg.MinVersion = tls.VersionTLS13
	c, cs, err := tlsrec.Client(testCtx(t), raw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Time{})
	if _, ok := c.(*tlsrec.Conn); !ok || cs.NegotiatedProtocol != tlsrec.ALPN {
		c.Close()
		t.Fatalf("ALPN %q (%T): the gateway did not take the records over", cs.NegotiatedProtocol, c)
	}
	return c
}

// offerXML returns the tunnel XML of a create's reply: Content-length framed, status 200.
func offerXML(tb testing.TB, reply []byte) []byte {
	tb.Helper()
	body, err := tsp.ParseContent(reply)
	if err != nil {
		tb.Fatalf("offer %q: %v", reply, err)
	}
	st, rest, err := tsp.ParseStatus(body)
	if err != nil || st.Code != tsp.StatusSuccess {
		tb.Fatalf("offer status %+v %v in %q", st, err, reply)
	}
	return rest
}

// parseOffer returns the tunnel offered in a create's reply (see offerXML).
func parseOffer(tb testing.TB, reply []byte) *tsp.Tunnel {
	tb.Helper()
	x := offerXML(tb, reply)
	o, err := tsp.ParseTunnel(x)
	if err != nil {
		tb.Fatalf("offer XML: %v\n%s", err, x)
	}
	return o
}

// waitForCapability waits until a new plain TSP connection is served again (VERSION answered
// with CAPABILITY), after whatever kept it from being served (what) is gone.
func waitForCapability(tb testing.TB, gw *testGW, what string) {
	tb.Helper()
	eventually(tb, what, func() (bool, error) {
		c, err := net.DialTimeout("tcp", gw.tcp, waitTimeout)
		if err != nil {
			return false, err
		}
		defer c.Close()
		r := rawExchange(tb, c, []byte("VERSION=2.0.2\r\n"), lineDone)
		return bytes.HasPrefix(r, []byte("CAPABILITY ")), nil
	})
}
