package gateway

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstmgw/dstm/gateway/config"
)

// TestAcceptedConnectionsInheritSocketOptions: the TSP port's options are set once on the
// listening socket and every accepted connection has them (Linux copies them on accept),
// without a setsockopt per connection.
func TestAcceptedConnectionsInheritSocketOptions(t *testing.T) {
	g := &Gateway{cfg: config.Config{}}
	g.cfg.TSP.HandshakeTimeout = config.Duration(5 * time.Second)
	ln, err := g.tcpListenConfig().Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("VERSION=2.0.0\r\n")); err != nil { // TCP_DEFER_ACCEPT waits for data
		t.Fatal(err)
	}
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rc, err := sc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, tcpKeepIdle},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, tcpKeepIntvl},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, tcpKeepCnt},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	}
	for _, tt := range tests {
		var got int
		var gerr error
		if err := rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), tt.level, tt.opt) }); err != nil {
			t.Fatal(err)
		}
		if gerr != nil || got != tt.want {
			t.Errorf("%s on the accepted connection = %d (%v), want %d", tt.name, got, gerr, tt.want)
		}
	}
}

// The UDP sockets of one address share its port; a socket without SO_REUSEPORT (another
// program) cannot join them.
func TestListenUDPReusePort(t *testing.T) {
	ucs, err := listenUDP(netip.MustParseAddrPort("127.0.0.1:0"), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, uc := range ucs {
			uc.Close()
		}
	}()
	port := ucs[0].LocalAddr().(*net.UDPAddr).Port
	for i, uc := range ucs {
		if p := uc.LocalAddr().(*net.UDPAddr).Port; p != port {
			t.Fatalf("socket %d on port %d, want %d", i, p, port)
		}
	}
	if c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err == nil {
		c.Close()
		t.Fatal("a socket without SO_REUSEPORT joined the port")
	}
}
