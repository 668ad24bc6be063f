package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstmgw/dstm/tunnel/udpmux"
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

// listen opens the TCP (with tcp) and UDP sockets of the TSP port on every configured
// address. A TEP node opens UDP only (DTLS).
func (g *Gateway) listen(tcp bool) ([]net.Listener, []*net.UDPConn, error) {
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
		if tcp {
			ln, err := g.tcpListenConfig().Listen(context.Background(), network, a.String())
			if err != nil {
				return fail(fmt.Errorf("listen tcp %s: %w", a, err))
			}
			tcps = append(tcps, ln)
			g.tcpAddrs = append(g.tcpAddrs, ln.Addr())
			g.listenAddr = append(g.listenAddr, "tcp "+ln.Addr().String())
		}
		if !g.cfg.Listen.UDP {
			continue
		}
		ucs, err := listenUDP(a, udpSockets())
		if err != nil {
			return fail(fmt.Errorf("listen udp %s: %w", a, err))
		}
		udps = append(udps, ucs...)
		g.udpAddrs = append(g.udpAddrs, ucs[0].LocalAddr())
		g.listenAddr = append(g.listenAddr, "udp "+ucs[0].LocalAddr().String())
	}
	if g.enroll == nil && tcp {
		g.enroll = newChanListener(tcps[0].Addr())
	}
	return tcps, udps, nil
}

// udpSockets is how many sockets share each UDP address (SO_REUSEPORT). The kernel spreads
// clients over them by their addresses, and each has its reader goroutine in the mux, so
// data records are opened on every core while one client's datagrams stay on one socket, in
// order.
func udpSockets() int { return min(runtime.GOMAXPROCS(0), 8) }

// listenUDP binds n sockets to a with SO_REUSEPORT (one, without it, for n 1); the others
// take the port the first got. A second gateway on the same address is still refused: the
// TCP socket, bound first, has no SO_REUSEPORT.
func listenUDP(a netip.AddrPort, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{}
	if n > 1 {
		lc.Control = udpmux.ReusePort
	}
	var ucs []*net.UDPConn
	for i := range n {
		addr := a
		if i > 0 {
			addr = netip.AddrPortFrom(a.Addr(), uint16(ucs[0].LocalAddr().(*net.UDPAddr).Port))
		}
		pc, err := lc.ListenPacket(context.Background(), "udp", addr.String())
		if err != nil {
			for _, uc := range ucs {
				uc.Close()
			}
			return nil, err
		}
		ucs = append(ucs, pc.(*net.UDPConn))
	}
	return ucs, nil
}
