package tep_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/gateway/tep"
	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/internal/netns"
	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/plain"
)

var (
	e2ePool   = netip.MustParsePrefix("10.99.0.0/24")
	e2eInner  = netip.MustParseAddr("10.99.255.1")
	e2eLease  = netip.MustParseAddr("10.99.0.2")
	e2eUnused = netip.MustParseAddr("10.99.0.77")
)

const (
	e2eMTU    = 1280
	bulkBytes = 20 << 20
	tunOffset = 16
)

// clientPump is a minimal client data plane: TUN reads go to the plain link,
// packets from the link are written to the TUN device.
type clientPump struct {
	dev  tun.Device
	link *plain.ClientLink
	mem  [][]byte // plain's single reader calls ReceivePackets: no lock needed
	bufs [][]byte
	done chan struct{}
}

func (c *clientPump) ReceivePackets(pkts [][]byte) {
	c.bufs = c.bufs[:0]
	for i, p := range pkts {
		if i == len(c.mem) {
			c.mem = append(c.mem, make([]byte, tunOffset+0xffff))
		}
		b := c.mem[i]
		c.bufs = append(c.bufs, b[:tunOffset+copy(b[tunOffset:], p)])
	}
	_, _ = c.dev.Write(c.bufs, tunOffset)
}

func (c *clientPump) routineReadTUN() {
	defer close(c.done)
	n := c.dev.BatchSize()
	bufs, sizes, pkts := make([][]byte, n), make([]int, n), make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, tunOffset+e2eMTU)
	}
	for {
		got, err := c.dev.Read(bufs, sizes, tunOffset)
		if err != nil && errors.Is(err, os.ErrClosed) {
			return
		}
		for i := 0; i < got; i++ {
			pkts[i] = bufs[i][tunOffset : tunOffset+sizes[i]]
		}
		_ = c.link.WritePackets(pkts[:got])
	}
}

type e2e struct {
	tp     *netns.Topology
	tep    *tep.TEP
	srv    *plain.Server
	client *clientPump
}

func setupGateway(t *testing.T, e *e2e) {
	t.Helper()
	var dev tun.Device
	err := e.tp.Gateway.Do(func() error {
		host, err := hostnet.New()
		if err != nil {
			return err
		}
		t.Cleanup(func() { host.Close() })
		var name string
		if dev, name, err = host.CreateTUN("dstmtep0", e2eMTU); err != nil {
			return err
		}
		for _, step := range []func() error{
			func() error { return host.AddAddress(name, netip.PrefixFrom(e2eInner, 32)) },
			func() error { return host.LinkUp(name) },
			func() error { return host.AddRoute(name, e2ePool) },
			func() error { return host.CheckIPv4Forwarding(true) },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		e.srv, err = plain.Listen(e.tp.GatewayV6)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.Close() })
	if e.tep, err = tep.New(tep.Config{Device: dev, InnerAddr: e2eInner, Pools: []netip.Prefix{e2ePool}, MTU: e2eMTU}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.tep.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("TEP Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("TEP Run did not stop")
		}
	})
	s, err := e.tep.AddSession(tep.SessionInfo{ID: "e2e", Identity: "alice", Lease: e2eLease, Transport: tunnel.Plain})
	if err != nil {
		t.Fatal(err)
	}
	link, err := e.srv.Register(e.tp.ClientV6, s)
	if err != nil {
		t.Fatal(err)
	}
	s.SetLink(link)
	t.Cleanup(func() { link.Close() })
}

func setupClient(t *testing.T, e *e2e) {
	t.Helper()
	c := &clientPump{done: make(chan struct{})}
	err := e.tp.Client.Do(func() error {
		host, err := hostnet.New()
		if err != nil {
			return err
		}
		t.Cleanup(func() { host.Close() })
		var name string
		if c.dev, name, err = host.CreateTUN("dstmcli0", e2eMTU); err != nil {
			return err
		}
		steps := []func() error{
			func() error { return host.AddAddress(name, netip.PrefixFrom(e2eLease, 32)) },
			func() error { return host.LinkUp(name) },
		}
		for _, r := range hostnet.FullTunnelRoutes() {
			steps = append(steps, func() error { return host.AddRoute(name, r) })
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		c.link, err = plain.Dial(e.tp.ClientV6, e.tp.GatewayV6, c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.link.Close() })
	go c.routineReadTUN()
	t.Cleanup(func() {
		c.dev.Close() // ends routineReadTUN
		<-c.done
	})
	e.client = c
}

// bulkBody is the deterministic content of /bulk.
func bulkBody() []byte {
	b := make([]byte, bulkBytes)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}

func setupServer(t *testing.T, e *e2e) {
	t.Helper()
	body := bulkBody()
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello over v4v6") })
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, _ *http.Request) { w.Write(body) })
	var ln net.Listener
	err := e.tp.Server.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(e.tp.ServerV4, 8080).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// clientHTTP returns an HTTP client whose connections are made in the
// client namespace.
func clientHTTP(t *testing.T, ns *netns.NS) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func TestEndToEndPlain(t *testing.T) {
	netns.SkipUnlessRoot(t)
	goroutines := runtime.NumGoroutine()
	t.Cleanup(func() { waitGoroutines(t, goroutines) }) // runs last
	e := &e2e{tp: netns.NewTopology(t, e2ePool)}
	setupGateway(t, e)
	setupClient(t, e)
	setupServer(t, e)
	hc := clientHTTP(t, e.tp.Client)
	base := fmt.Sprintf("http://%s:8080", e.tp.ServerV4)

	t.Run("http", func(t *testing.T) {
		got := get(t, hc, base+"/hello")
		if string(got) != "hello over v4v6" {
			t.Fatalf("GET /hello = %q", got)
		}
	})
	t.Run("bulk", func(t *testing.T) {
		start := time.Now()
		got := get(t, hc, base+"/bulk")
		if sha256.Sum256(got) != sha256.Sum256(bulkBody()) {
			t.Fatalf("bulk body corrupted or short: %d bytes", len(got))
		}
		t.Logf("TEP %+v", e.tep.Stats())
		t.Logf("20 MB in %v (%.0f MB/s)", time.Since(start), float64(bulkBytes)/1e6/time.Since(start).Seconds())
	})
	t.Run("keepalive ping to inner address", func(t *testing.T) { ping(t, e.tp.Client, e2eInner) })
	t.Run("spoofed source dropped", func(t *testing.T) {
		before := e.tep.Stats().Drops["spoofed_source"]
		spoof := udpPacket(netip.MustParseAddr("10.99.0.99"), e.tp.ServerV4)
		if err := e.client.link.WritePackets([][]byte{spoof}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "spoofed_source drop", func() bool { return e.tep.Stats().Drops["spoofed_source"] == before+1 })
	})
	t.Run("unleased pool address unreachable", func(t *testing.T) { unreachable(t, e) })
	if st := e.tep.Stats(); st.Transports[tunnel.Plain].In.Packets == 0 || st.Transports[tunnel.Plain].Out.Packets == 0 {
		t.Fatalf("no plain traffic counted: %+v", st)
	}
}

func get(t *testing.T, hc *http.Client, url string) []byte {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return body
}

// ping sends an ICMP echo request like gogoc's keepalive and waits for the
// reply (the gateway kernel answers for its TUN address).
func ping(t *testing.T, ns *netns.NS, dst netip.Addr) {
	t.Helper()
	var c *icmp.PacketConn
	if err := ns.Do(func() (err error) { c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 1652, Seq: 1, Data: []byte("dstm-keepalive!!")}}
	wb, err := msg.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteTo(wb, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rb := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(rb)
		if err != nil {
			t.Fatalf("no echo reply: %v", err)
		}
		m, err := icmp.ParseMessage(1, rb[:n])
		if err == nil && m.Type == ipv4.ICMPTypeEchoReply && from.String() == dst.String() {
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == 1652 && bytes.Equal(e.Data, []byte("dstm-keepalive!!")) {
				return
			}
		}
	}
}

// unreachable sends UDP from the server to an unleased pool address and
// expects the TEP's ICMP host unreachable to surface as EHOSTUNREACH.
func unreachable(t *testing.T, e *e2e) {
	var c net.Conn
	err := e.tp.Server.Do(func() (err error) {
		// Without IP_RECVERR Linux reports only "hard" ICMP errors (port
		// unreachable) to UDP sockets, not host unreachable.
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1) })
			return errors.Join(err, serr)
		}}
		c, err = d.Dial("udp4", netip.AddrPortFrom(e2eUnused, 9999).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := e.tep.Stats()
	if _, err := c.Write([]byte("anyone there?")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 64))
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("read after send to unleased address: %v, want EHOSTUNREACH", err)
	}
	after := e.tep.Stats()
	if after.Drops["no_session"] <= before.Drops["no_session"] || after.ICMPSent <= before.ICMPSent {
		t.Fatalf("no_session %d -> %d, ICMP %d -> %d", before.Drops["no_session"], after.Drops["no_session"], before.ICMPSent, after.ICMPSent)
	}
}

func udpPacket(src, dst netip.Addr) []byte {
	p := make([]byte, 28+4)
	p[0], p[3], p[8], p[9] = 0x45, byte(len(p)), 64, packet.ProtoUDP
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	packet.SetHeaderChecksum(p)
	p[21], p[23], p[25] = 9, 9, 12 // ports 9 -> 9, UDP length 12, checksum 0
	return p
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
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

func waitGoroutines(t *testing.T, want int) {
	var mu sync.Mutex
	mu.Lock()
	defer mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for runtime.NumGoroutine() > want {
		select {
		case <-tick.C:
		case <-deadline:
			buf := make([]byte, 1<<20)
			t.Errorf("goroutine leak: %d > %d\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
			return
		}
	}
}
