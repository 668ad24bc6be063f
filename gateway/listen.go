package gateway

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TCP keepalive of TSP connections (Go's defaults) ends the control connections of clients
// that vanished without closing (a laptop put to sleep), which gogoc keeps open, idle, for
// the life of its tunnel.
const (
	tcpKeepIdle  = 15 // seconds
	tcpKeepIntvl = 15 // seconds
	tcpKeepCnt   = 9
)

// tcpListenConfig sets the socket options on the listening socket, which Linux copies into
// every accepted connection (Go would set keepalive on each unless KeepAlive < 0). Every
// protocol on the port has the client speak first, so with TCP_DEFER_ACCEPT the kernel hands
// a connection over only once its first bytes are in: no empty read, and connections that
// never send never reach the handshake slots (the kernel drops them after about the
// handshake timeout).
func (g *Gateway) tcpListenConfig() *net.ListenConfig {
	secs := max(1, int(g.cfg.TSP.HandshakeTimeout.D()/time.Second))
	opts := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, tcpKeepIdle},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, tcpKeepIntvl},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, tcpKeepCnt},
	}
	return &net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			for _, o := range opts {
				if err := unix.SetsockoptInt(int(fd), o.level, o.opt, o.value); err != nil {
					serr = fmt.Errorf("%s: %w", o.name, err)
					return
				}
			}
		}); err != nil {
			return err
		}
		return serr
	}}
}

// listen opens the TCP and UDP sockets of the TSP port on every configured address.
func (g *Gateway) listen() ([]net.Listener, []*net.UDPConn, error) {
	var tcps []net.Listener
	var udps []*net.UDPConn
	fail := func(err error) ([]net.Listener, []*net.UDPConn, error) {
		closeAll(tcps, udps)
		return nil, nil, err
	}
	for _, a := range g.cfg.Listen.Addresses {
		network := "tcp"
		if a.Addr().Is6() && !a.Addr().Is4In6() && !a.Addr().IsUnspecified() {
			network = "tcp6"
		}
		ln, err := g.tcpListenConfig().Listen(context.Background(), network, a.String())
		if err != nil {
			return fail(fmt.Errorf("listen tcp %s: %w", a, err))
		}
		tcps = append(tcps, ln)
		g.tcpAddrs = append(g.tcpAddrs, ln.Addr())
		g.listenAddr = append(g.listenAddr, "tcp "+ln.Addr().String())
		if !g.cfg.Listen.UDP {
			continue
		}
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		if err != nil {
			return fail(fmt.Errorf("listen udp %s: %w", a, err))
		}
		udps = append(udps, uc)
		g.udpAddrs = append(g.udpAddrs, uc.LocalAddr())
		g.listenAddr = append(g.listenAddr, "udp "+uc.LocalAddr().String())
	}
	if g.enroll == nil {
		g.enroll = newChanListener(tcps[0].Addr())
	}
	return tcps, udps, nil
}
