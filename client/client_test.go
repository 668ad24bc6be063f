package client

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
)

func TestSetDefaults(t *testing.T) {
	tests := []struct {
		name                string
		in                  Config
		wantErr             bool
		gateway, serverName string
		transport, device   string
		dtls                time.Duration
		bmin, bmax          time.Duration
	}{
		{name: "no gateway", in: Config{}, wantErr: true},
		{name: "bad transport", in: Config{Gateway: "gw", Transport: "udp"}, wantErr: true},
		{name: "bad dns", in: Config{Gateway: "gw", DNS: "dnsmasq"}, wantErr: true},
		{name: "host only", in: Config{Gateway: "gw.example.com"},
			gateway: "gw.example.com:3653", serverName: "gw.example.com", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "host and port", in: Config{Gateway: "gw.example.com:4000"},
			gateway: "gw.example.com:4000", serverName: "gw.example.com", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "bare IPv6", in: Config{Gateway: "2001:db8::1"},
			gateway: "[2001:db8::1]:3653", serverName: "2001:db8::1", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "bracketed IPv6", in: Config{Gateway: "[2001:db8::1]"},
			gateway: "[2001:db8::1]:3653", serverName: "2001:db8::1", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "IPv6 with port", in: Config{Gateway: "[2001:db8::1]:3653"},
			gateway: "[2001:db8::1]:3653", serverName: "2001:db8::1", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "explicit values kept", in: Config{
			Gateway: "[::1]:1", ServerName: "gw.test", Transport: TransportTLS, Device: "tun9",
			DTLSTimeout: time.Second, BackoffMin: 2 * time.Second, BackoffMax: 10 * time.Second,
		}, gateway: "[::1]:1", serverName: "gw.test", transport: TransportTLS, device: "tun9",
			dtls: time.Second, bmin: 2 * time.Second, bmax: 10 * time.Second},
		{name: "backoff max below min", in: Config{Gateway: "gw", BackoffMin: 2 * time.Minute, BackoffMax: time.Second},
			gateway: "gw:3653", serverName: "gw", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: 2 * time.Minute, bmax: 2 * time.Minute},
		{name: "negative durations", in: Config{Gateway: "gw", DTLSTimeout: -1, BackoffMin: -1},
			gateway: "gw:3653", serverName: "gw", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "cluster", in: Config{Gateway: "gw1", Gateways: []string{"gw2:4000", "[2001:db8::3]"}},
			gateway: "gw1:3653", serverName: "gw1", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "empty gateway in the list", in: Config{Gateway: "gw1", Gateways: []string{""}}, wantErr: true},
		{name: "rootless", in: Config{Gateway: "gw", Proxy: []string{"socks5://127.0.0.1:1080", "http://[::1]:8080"}},
			gateway: "gw:3653", serverName: "gw", transport: TransportAuto, device: "dstmc0",
			dtls: 3 * time.Second, bmin: time.Second, bmax: time.Minute},
		{name: "proxy open to the network", in: Config{Gateway: "gw", Proxy: []string{"socks5://0.0.0.0:1080"}}, wantErr: true},
		{name: "proxy and plain", in: Config{Gateway: "gw", Transport: TransportPlain, Proxy: []string{"socks5://127.0.0.1:1080"}}, wantErr: true},
		{name: "proxy and kill switch", in: Config{Gateway: "gw", KillSwitch: true, Proxy: []string{"socks5://127.0.0.1:1080"}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.in
			err := c.setDefaults()
			if err == nil && len(c.endpoints()) != 1+len(c.Gateways) {
				t.Fatalf("%d endpoints for %d gateways", len(c.endpoints()), 1+len(c.Gateways))
			}
			if tc.wantErr {
				if err == nil {
					t.Fatalf("setDefaults accepted %+v", tc.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ep := c.endpoints()[0]
			if ep.addr != tc.gateway || ep.serverName != tc.serverName || c.Transport != tc.transport || c.Device != tc.device {
				t.Errorf("got gateway %q server name %q transport %q device %q", ep.addr, ep.serverName, c.Transport, c.Device)
			}
			if c.DTLSTimeout != tc.dtls || c.BackoffMin != tc.bmin || c.BackoffMax != tc.bmax {
				t.Errorf("got dtls %v backoff %v..%v", c.DTLSTimeout, c.BackoffMin, c.BackoffMax)
			}
			if c.DNS == "" || c.ResolvConf == "" {
				t.Errorf("dns %q, resolv.conf %q left empty", c.DNS, c.ResolvConf)
			}
			if c.Now == nil || c.OnState == nil {
				t.Error("Now or OnState left nil")
			}
			c.OnState(Status{}) // the default must be callable
		})
	}
}

func TestTrimBrackets(t *testing.T) {
	for in, want := range map[string]string{
		"[::1]": "::1", "::1": "::1", "[": "[", "[]": "", "host": "host", "[a]b": "[a]b", "": "",
	} {
		if got := trimBrackets(in); got != want {
			t.Errorf("trimBrackets(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRequestType(t *testing.T) {
	for in, want := range map[string]tsp.TunnelType{
		TransportAuto: tsp.TypeV4AnyV6, TransportDTLS: tsp.TypeV4DTLSV6, TransportTLS: tsp.TypeV4TLSV6,
		TransportPlain: tsp.TypeV4V6, "": tsp.TypeV4AnyV6,
	} {
		if got := requestType(in); got != want {
			t.Errorf("requestType(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestPermanent(t *testing.T) {
	status := func(code int) error {
		return fmt.Errorf("session: %w", &tsp.StatusError{Code: code, Err: errors.New("refused")})
	}
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("connection reset"), false},
		{status(tsp.StatusAuthenticationFailed), true},
		{status(tsp.StatusUnsupportedTunnelType), true},
		{status(tsp.StatusUnsupportedVersion), true},
		{status(tsp.StatusNoMoreTunnels), false},
		{status(tsp.StatusServerTooBusy), false},
		{status(tsp.StatusServerError), false},
		{fmt.Errorf("renew: %w", enroll.ErrCertificateExpired), true},
	}
	for _, tc := range tests {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// ipv4 builds a minimal IPv4 packet (header only, total length 20 + len(payload)).
func ipv4(src, dst string, payload []byte) []byte {
	p := make([]byte, 20, 20+len(payload))
	p[0] = 0x45
	n := 20 + len(payload)
	p[2], p[3] = byte(n>>8), byte(n)
	p[8] = 64
	p[9] = 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	return append(p, payload...)
}

func TestReceivePacketOnlyForTheLease(t *testing.T) {
	lease := netip.MustParseAddr("100.64.0.7").As4()
	tests := []struct {
		name    string
		pkt     []byte
		written bool
	}{
		{"to the lease", ipv4("192.0.2.1", "100.64.0.7", []byte("hi")), true},
		{"to another address", ipv4("192.0.2.1", "100.64.0.8", nil), false},
		{"to the gateway's side", ipv4("100.64.0.7", "192.0.2.1", nil), false},
		{"short", []byte{0x45, 0, 0}, false},
		{"IPv6", append([]byte{0x60}, make([]byte, 39)...), false},
		{"total length beyond buffer", func() []byte { p := ipv4("192.0.2.1", "100.64.0.7", nil); p[3] = 200; return p }(), false},
		{"empty", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct := tuntest.NewChannelTUN()
			ts := newTunSide(ct.TUN(), 1400, lease)
			t.Cleanup(ts.close)
			done := make(chan struct{})
			go func() {
				defer close(done)
				ts.ReceivePackets([][]byte{tc.pkt})
			}()
			if tc.written {
				select {
				case got := <-ct.Inbound:
					if !bytes.Equal(got, tc.pkt) {
						t.Fatalf("TUN got %x, want %x", got, tc.pkt)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("packet for the lease not written to the TUN device")
				}
			}
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("ReceivePackets blocked: it wrote a packet it should have dropped")
			}
			wantDropped := uint64(1)
			if tc.written {
				wantDropped = 0
			}
			if d := ts.dropped.Load(); d != wantDropped {
				t.Errorf("dropped %d, want %d", d, wantDropped)
			}
		})
	}
}

// fakeLink records the packets written to it.
type fakeLink struct {
	mu   sync.Mutex
	got  chan []byte
	shut bool
}

func (f *fakeLink) WritePackets(pkts [][]byte) error {
	for _, p := range pkts {
		f.got <- append([]byte(nil), p...)
	}
	return nil
}

func (f *fakeLink) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shut = true
	return nil
}

func (f *fakeLink) Done() <-chan struct{}    { return nil }
func (f *fakeLink) Transport() string        { return tunnel.DTLS }
func (f *fakeLink) Endpoint() netip.AddrPort { return netip.AddrPort{} }

func TestTunSideRun(t *testing.T) {
	ct := tuntest.NewChannelTUN()
	ts := newTunSide(ct.TUN(), 1400, netip.MustParseAddr("100.64.0.7").As4())
	t.Cleanup(ts.close)
	ran := make(chan error, 1)
	go func() { ran <- ts.run() }()
	send := func(p []byte) {
		t.Helper()
		select {
		case ct.Outbound <- p:
		case <-time.After(5 * time.Second):
			t.Fatal("tunSide does not read the TUN device")
		}
	}
	// No link yet: the packet is dropped and counted.
	send(ipv4("100.64.0.7", "192.0.2.1", nil))
	// send returns once the packet is read, not once it is handled: wait for the drop.
	deadline := time.Now().Add(5 * time.Second)
	for ts.dropped.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the packet without a link was not counted as dropped")
		}
		runtime.Gosched()
	}
	link := &fakeLink{got: make(chan []byte, 4)}
	ts.setLink(link)
	p := ipv4("100.64.0.7", "192.0.2.1", []byte("payload"))
	send(p)
	select {
	case got := <-link.got:
		if !bytes.Equal(got, p) {
			t.Fatalf("link got %x, want %x", got, p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packet not handed to the link")
	}
	if d := ts.dropped.Load(); d != 1 {
		t.Errorf("dropped %d, want 1 (the packet before the link)", d)
	}
	ts.setLink(nil)
	send(p)
	ct.TUN().Close()
	select {
	case err := <-ran:
		if err == nil {
			t.Fatal("run returned nil after the device closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after the device closed")
	}
	if d := ts.dropped.Load(); d != 2 {
		t.Errorf("dropped %d, want 2 (after the link was removed)", d)
	}
	if len(link.got) != 0 {
		t.Errorf("packet reached a removed link")
	}
}

func TestPrefixStrings(t *testing.T) {
	got := prefixStrings([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("100.64.0.1/32")})
	if len(got) != 2 || got[0] != "10.0.0.0/8" || got[1] != "100.64.0.1/32" {
		t.Fatalf("prefixStrings = %v", got)
	}
	if got := prefixStrings(nil); len(got) != 0 {
		t.Fatalf("prefixStrings(nil) = %v", got)
	}
}

// TestControlReaderEndsWithSession: the reader of a control connection returns once its
// session has stopped, even when messages keep coming that nobody reads.
func TestControlReaderEndsWithSession(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	ctl := &control{conn: b, sp: tsp.NewSplitter(0), buf: make([]byte, 4096), msgs: make(chan []byte, 4)}
	stop := make(chan struct{})
	failed := make(chan ctlErr) // nobody reads either
	done := make(chan struct{})
	go func() { defer close(done); ctl.readLoop(stop, failed) }()
	go func() {
		for range 10 { // more than msgs holds: the reader blocks on the sixth
			if _, err := a.Write([]byte("200 Success\r\n")); err != nil {
				return
			}
		}
	}()
	close(stop) // the session ended
	b.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the control reader outlived its session")
	}
}

// Packets from two links at once (a reconnect overlapping the old link) reach the TUN device
// each link's in order, whether written directly or through the queue.
func TestTunSideKeepsOrder(t *testing.T) {
	lease := netip.MustParseAddr("100.64.0.7").As4()
	ct := tuntest.NewChannelTUN()
	ts := newTunSide(ct.TUN(), 1400, lease)
	// On failure, writes blocked on the device must end before close can: drain it first.
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	t.Cleanup(ts.close)
	t.Cleanup(func() {
		go func() {
			for {
				select {
				case <-ct.Inbound:
				case <-stop:
					return
				}
			}
		}()
	})
	const per = 500
	for src := range 2 {
		go func() {
			for seq := 0; seq < per; seq += 5 {
				batch := make([][]byte, 5)
				for j := range batch {
					batch[j] = ipv4("192.0.2.1", "100.64.0.7", []byte{byte(src), byte((seq + j) >> 8), byte(seq + j)})
				}
				ts.ReceivePackets(batch)
			}
		}()
	}
	next := [2]int{}
	for got := 0; got < 2*per; got++ {
		select {
		case p := <-ct.Inbound:
			body := p[len(p)-3:]
			src, seq := int(body[0]), int(body[1])<<8|int(body[2])
			if seq != next[src] {
				t.Fatalf("link %d: packet %d after %d", src, seq, next[src]-1)
			}
			next[src]++
		case <-time.After(5 * time.Second):
			t.Fatalf("%d packets of %d, dropped %d", got, 2*per, ts.dropped.Load())
		}
	}
}

func TestEndpointsOfACluster(t *testing.T) {
	c := Config{Gateway: "gw1", Gateways: []string{"gw2:4000", "[2001:db8::3]"}}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	want := []gatewayEndpoint{{"gw1:3653", "gw1"}, {"gw2:4000", "gw2"}, {"[2001:db8::3]:3653", "2001:db8::3"}}
	if got := c.endpoints(); !slices.Equal(got, want) {
		t.Fatalf("endpoints %v, want %v", got, want)
	}
	c.ServerName = "vpn.corp.example"
	for _, ep := range c.endpoints() {
		if ep.serverName != "vpn.corp.example" {
			t.Fatalf("%v: an explicit server name applies to every gateway", ep)
		}
	}
}
