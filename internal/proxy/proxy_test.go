package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// hostNetwork is a Network on the host's loopback: names in names resolve to their address.
type hostNetwork struct{ names map[string]string }

func (h hostNetwork) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if network != "tcp4" {
		return nil, fmt.Errorf("network %q, want tcp4", network)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if a, ok := h.names[host]; ok {
		host = a
	} else if net.ParseIP(host) == nil {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp4", net.JoinHostPort(host, port))
}

// echoServer echoes every connection's bytes back; it returns its address.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// startProxy serves kind on a loopback port through n; it returns the address.
func startProxy(t *testing.T, kind string, n Network, maxConns int) (*Server, string) {
	t.Helper()
	s := New(maxConns, zerolog.Nop())
	s.SetNetwork(n)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, kind, ln); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	return s, ln.Addr().String()
}

// socksConnect speaks SOCKS5 to the proxy at addr and returns the connection and the reply.
func socksConnect(t *testing.T, addr string, request []byte) (net.Conn, byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method reply %v %v", m, err)
	}
	if _, err := c.Write(request); err != nil {
		t.Fatal(err)
	}
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("reply: %v", err)
	}
	return c, rep[1]
}

func connectIPv4(addr string) []byte {
	ap := mustAddrPort(addr)
	a := ap.IP.To4()
	b := []byte{5, 1, 0, 1, a[0], a[1], a[2], a[3], 0, 0}
	binary.BigEndian.PutUint16(b[8:], uint16(ap.Port))
	return b
}

func connectName(name string, port int) []byte {
	b := append([]byte{5, 1, 0, 3, byte(len(name))}, name...)
	return binary.BigEndian.AppendUint16(b, uint16(port))
}

func mustAddrPort(s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func echo(t *testing.T, c io.ReadWriter, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v; want %q", got, err, msg)
	}
}

func TestSOCKS5(t *testing.T) {
	target := echoServer(t)
	port := mustAddrPort(target).Port
	n := hostNetwork{names: map[string]string{"echo.corp.example": "127.0.0.1"}}
	s, addr := startProxy(t, "socks5", n, 0)
	for _, tc := range []struct {
		name    string
		request []byte
		rep     byte
	}{
		{"IPv4 literal", connectIPv4(target), repSuccess},
		{"name, resolved through the tunnel", connectName("echo.corp.example", port), repSuccess},
		{"unknown name", connectName("nowhere.corp.example", port), repHostUnreachable},
		{"bad name", connectName("a b", port), repHostUnreachable},
		{"BIND", append([]byte{5, 2, 0}, connectIPv4(target)[3:]...), repCommandNotSupported},
		{"UDP ASSOCIATE", append([]byte{5, 3, 0}, connectIPv4(target)[3:]...), repCommandNotSupported},
		{"address type 9", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, repAddrNotSupported},
		{"port 0", connectName("echo.corp.example", 0), repHostUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, rep := socksConnect(t, addr, tc.request)
			defer c.Close()
			if rep != tc.rep {
				t.Fatalf("reply %d, want %d", rep, tc.rep)
			}
			if rep == repSuccess {
				echo(t, c, "through the tunnel")
			}
		})
	}
	if st := s.Stats(); st.Proxied != 2 || st.Failed != 6 {
		t.Errorf("stats %+v, want 2 proxied and 6 failed", st)
	}

	// Without a tunnel: network unreachable, at once.
	s.SetNetwork(nil)
	c, rep := socksConnect(t, addr, connectIPv4(target))
	c.Close()
	if rep != repNetworkUnreachable {
		t.Errorf("without a tunnel: reply %d, want %d", rep, repNetworkUnreachable)
	}

	// A client that offers only username/password authentication is refused.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _ = c2.Write([]byte{5, 1, 2})
	var m [2]byte
	if _, err := io.ReadFull(c2, m[:]); err != nil || m != [2]byte{5, 0xff} {
		t.Errorf("method reply %v %v, want 5 255", m, err)
	}
}

func TestHTTPProxy(t *testing.T) {
	target := echoServer(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Proxy-Connection") != "" {
			http.Error(w, "hop-by-hop header forwarded", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "page %s", r.URL.Path)
	}))
	defer web.Close()
	n := hostNetwork{names: map[string]string{"web.corp.example": "127.0.0.1", "echo.corp.example": "127.0.0.1"}}
	_, addr := startProxy(t, "http", n, 0)

	// CONNECT, as curl and browsers do for https.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT echo.corp.example:%d HTTP/1.1\r\nHost: echo.corp.example\r\n\r\n", mustAddrPort(target).Port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	echo(t, struct {
		io.Reader
		io.Writer
	}{br, c}, "through the tunnel")

	// Plain requests in absolute form, two on one connection.
	proxyURL := "http://" + addr
	client := &http.Client{Transport: &http.Transport{Proxy: func(*http.Request) (*url.URL, error) { return url.Parse(proxyURL) }}, Timeout: 5 * time.Second}
	for _, path := range []string{"/a", "/b"} {
		resp, err := client.Get("http://web.corp.example:" + fmt.Sprint(mustAddrPort(web.Listener.Addr().String()).Port) + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "page "+path {
			t.Fatalf("GET %s through the proxy: %d %q", path, resp.StatusCode, body)
		}
	}
	// An unknown name: 502 with the reason.
	resp, err = client.Get("http://nowhere.corp.example/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "no such host") {
		t.Errorf("unknown host: %d %q", resp.StatusCode, body)
	}
}

// TestConnectionLimit: beyond the limit a connection is closed at once and counted; the
// ones in progress go on.
func TestConnectionLimit(t *testing.T) {
	target := echoServer(t)
	s, addr := startProxy(t, "socks5", hostNetwork{}, 1)
	c, rep := socksConnect(t, addr, connectIPv4(target))
	defer c.Close()
	if rep != repSuccess {
		t.Fatal(rep)
	}
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the connection over the limit: %v, want EOF", err)
	}
	echo(t, c, "still here")
	if s.Stats().Refused != 1 {
		t.Errorf("refused %d, want 1", s.Stats().Refused)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, kind, addr, err string
	}{
		{"socks5://127.0.0.1:1080", "socks5", "127.0.0.1:1080", ""},
		{"socks5h://localhost:1080", "socks5", "localhost:1080", ""},
		{"http://[::1]:8080", "http", "[::1]:8080", ""},
		{"socks5://0.0.0.0:1080", "", "", "listen on a loopback address"},
		{"socks5://192.0.2.1:1080", "", "", "listen on a loopback address"},
		{"socks5://127.0.0.1", "", "", "the port is required"},
		{"https://127.0.0.1:1080", "", "", "want socks5://"},
		{"socks5://u:p@127.0.0.1:1080", "", "", "only a scheme"},
	} {
		l, err := ParseURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || l.Kind != tc.kind || l.Addr != tc.addr {
			t.Errorf("%s: %+v %v", tc.in, l, err)
		}
	}
}

// TestCloseEndsConnections: Close ends the proxied connections and waits for them.
func TestCloseEndsConnections(t *testing.T) {
	target := echoServer(t)
	s := New(0, zerolog.Nop())
	s.SetNetwork(hostNetwork{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Serve(ctx, "socks5", ln) })
	c, rep := socksConnect(t, ln.Addr().String(), connectIPv4(target))
	defer c.Close()
	if rep != repSuccess {
		t.Fatal(rep)
	}
	cancel()
	wg.Wait()
	s.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a proxied connection after Close: %v, want EOF", err)
	}
}
