package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstmgw/dstm/internal/netns"
)

// Ports of the IPv4-only server.
const (
	httpPort = 80
	udpPort  = 9999
	page     = "Hello from the IPv4-only server, reached over IPv6 through DSTM\n"
)

// servers are the IPv4-only server's services, run by the test process on sockets opened in
// the server namespace:
//
//	GET  /            the fixed page
//	GET  /bytes?n=N   N deterministic bytes (payload(N))
//	POST /sha256      "<hex sha256> <length>" of the request body
//	UDP  :9999        every datagram's payload is recorded on udp
type servers struct {
	base string      // http://ServerV4
	udp  chan string // payloads received on the UDP port; full channel drops (the tests send few)
}

func startServers(t *testing.T, ns *netns.NS, addr netip.Addr) *servers {
	t.Helper()
	var hl net.Listener
	var uc *net.UDPConn
	err := ns.Do(func() error {
		var err error
		if hl, err = net.Listen("tcp4", netip.AddrPortFrom(addr, httpPort).String()); err != nil {
			return err
		}
		uc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, udpPort)))
		return err
	})
	if err != nil {
		t.Fatalf("server sockets: %v", err)
	}
	s := &servers{base: "http://" + netip.AddrPortFrom(addr, httpPort).String(), udp: make(chan string, 64)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, page) })
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want n=LENGTH", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.Copy(w, payload(n))
	})
	mux.HandleFunc("POST /sha256", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%x %d", h.Sum(nil), n)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(hl) }()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := uc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			select {
			case s.udp <- string(buf[:n]):
			default:
			}
		}
	}()
	t.Cleanup(func() {
		hs.Close()
		uc.Close()
	})
	return s
}

// payload returns n deterministic pseudo-random bytes.
func payload(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{'d', 's', 't', 'm'}), n)
}

// digest is "<hex sha256> <length>" of r, the server's /sha256 answer format.
func digest(r io.Reader) (string, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return fmt.Sprintf("%s %d", hex.EncodeToString(h.Sum(nil)), n), err
}

// httpIn returns an HTTP client whose connections are opened inside ns (no keep-alive, so each
// request is a fresh connection through the current tunnel).
func httpIn(ns *netns.NS, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: nsDialer(ns), DisableKeepAlives: true},
	}
}

// get fetches url and returns the body of a 200 answer.
func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, err
}

// upload posts body to /sha256 and returns the server's digest of what it received.
func (s *servers) upload(ctx context.Context, c *http.Client, body io.Reader) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/sha256", body)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("POST /sha256: %s: %s", resp.Status, b)
	}
	return strings.TrimSpace(string(b)), err
}

// checkTraffic fetches the page, uploads upload bytes and downloads download bytes through the
// tunnel from the client namespace, checking every byte by hash.
func (e *env) checkTraffic(upload, download int64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := httpIn(e.tp.Client, 90*time.Second)
	start := time.Now()
	body, err := get(ctx, c, e.srv.base+"/")
	if err != nil {
		e.t.Fatalf("GET / through the tunnel: %v", err)
	}
	if string(body) != page {
		e.t.Fatalf("GET / = %q, want %q", body, page)
	}
	want, _ := digest(payload(upload))
	t0 := time.Now()
	got, err := e.srv.upload(ctx, c, payload(upload))
	if err != nil {
		e.t.Fatalf("upload of %d bytes: %v", upload, err)
	}
	if got != want {
		e.t.Fatalf("upload: server received %q, want %q", got, want)
	}
	up := time.Since(t0)
	t0 = time.Now()
	body, err = get(ctx, c, fmt.Sprintf("%s/bytes?n=%d", e.srv.base, download))
	if err != nil {
		e.t.Fatalf("download of %d bytes: %v", download, err)
	}
	want, _ = digest(payload(download))
	if got, _ := digest(strings.NewReader(string(body))); got != want {
		e.t.Fatalf("download: received %q, want %q", got, want)
	}
	e.t.Logf("traffic ok in %v: page, upload %d B in %v (%.0f Mbit/s), download %d B in %v (%.0f Mbit/s)",
		time.Since(start).Round(time.Millisecond), upload, up.Round(time.Millisecond), mbps(upload, up),
		download, time.Since(t0).Round(time.Millisecond), mbps(download, time.Since(t0)))
}

func mbps(n int64, d time.Duration) float64 { return float64(n) * 8 / d.Seconds() / 1e6 }

// scrape returns the gateway's /metrics text, fetched inside the gateway namespace.
func (e *env) scrape() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := get(ctx, httpIn(e.tp.Gateway, 10*time.Second), "http://"+metricsAddr+"/metrics")
	return string(b), err
}

// metric sums the samples of the metric called name whose labels include every k="v" pair in
// labels; found is false when no sample matches.
func metric(text, name string, labels ...string) (sum float64, found bool) {
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series, value := line[:sp], line[sp+1:]
		lname, lset, _ := strings.Cut(series, "{")
		if lname != name {
			continue
		}
		ok := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if !strings.Contains(lset, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		sum, found = sum+f, true
	}
	return sum, found
}

// sendRawUDP sends one IPv4/UDP datagram with an arbitrary source address from inside ns
// (IPPROTO_RAW implies IP_HDRINCL: the kernel routes by destination and keeps our header).
func sendRawUDP(ns *netns.NS, src, dst netip.Addr, dport uint16, data []byte) error {
	pkt := ipv4UDP(src, dst, 40000, dport, data)
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	})
}

// ipv4UDP builds an IPv4 packet carrying a UDP datagram (UDP checksum 0: none, legal in IPv4).
func ipv4UDP(src, dst netip.Addr, sport, dport uint16, data []byte) []byte {
	b := make([]byte, 28+len(data))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64 // TTL
	b[9] = unix.IPPROTO_UDP
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], ipChecksum(b[:20]))
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(data)))
	copy(b[28:], data)
	return b
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// sendIPv6OnLink sends one minimal IPv6 packet (fe80::1 → ff02::1, no next header) out of the
// device dev in ns, as the kernel's own router solicitations and MLD reports go out of a TUN
// device: an AF_PACKET socket hands it to the device like any locally routed packet.
func sendIPv6OnLink(ns *netns.NS, dev string) error {
	pkt := make([]byte, 40)
	pkt[0] = 0x60
	pkt[6] = 59 // no next header
	pkt[7] = 1  // hop limit
	src, dst := netip.MustParseAddr("fe80::1").As16(), netip.MustParseAddr("ff02::1").As16()
	copy(pkt[8:24], src[:])
	copy(pkt[24:40], dst[:])
	proto := htons(unix.ETH_P_IPV6)
	return ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(proto))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
