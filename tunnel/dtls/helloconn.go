package dtls

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// maxHelloVerifies bounds the server's HelloVerifyRequests a client acts on in one handshake:
// they are unauthenticated, and a forged stream of them must not keep it sending ClientHellos.
const maxHelloVerifies = 8

// helloConn is the client's socket as pion sees it. It does the client's part of the
// gateway's stateless cookie exchange, for pion: it takes the cookie from the gateway's
// HelloVerifyRequest (parseHelloVerify; pion never sees it) and sends pion's first
// ClientHello again with the cookie in it, still at message_seq 0, as it does every
// retransmission of that ClientHello. The gateway verifies the cookie and gives its pion the
// ClientHello without it, so both pions run the handshake of a server that skipped the
// HelloVerifyRequest, over the same transcript.
//
// pion alone cannot do this: after a HelloVerifyRequest it sends the standard second
// ClientHello, at message_seq 1, and a pion server that did not send that HelloVerifyRequest
// itself can neither take it (its first message must have message_seq 0) nor answer at
// message_seq 1; the message_seq of every message is part of the Finished MACs, so no
// rewriting on the server side can hide the difference. Any other HelloVerifyRequest (a
// gateway whose pion does its own exchange) goes to pion, which answers it the standard way.
//
// Once a ServerHello arrives, helloConn only passes datagrams through.
type helloConn struct {
	net.PacketConn
	done atomic.Bool // a ServerHello arrived

	mu       sync.Mutex
	hello    []byte   // pion's last first-ClientHello datagram, as pion wrote it
	to       net.Addr // where pion sent it
	cookie   []byte   // from the gateway's last HelloVerifyRequest
	verifies int      // HelloVerifyRequests acted on
}

func newHelloConn(c net.PacketConn) *helloConn { return &helloConn{PacketConn: c} }

// WriteTo sends pion's datagrams, with the cookie put into a first ClientHello once there is
// one.
func (c *helloConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.done.Load() || len(b) == 0 || b[0] != contentHandshake {
		return c.PacketConn.WriteTo(b, addr)
	}
	h, ok := parseClientHello(b)
	if !ok || h.msgSeq != 0 || len(h.cookie) != 0 {
		return c.PacketConn.WriteTo(b, addr)
	}
	c.mu.Lock()
	c.hello = append(c.hello[:0], b...)
	c.to = addr
	cookie := c.cookie
	c.mu.Unlock()
	if cookie == nil {
		return c.PacketConn.WriteTo(b, addr)
	}
	if out, ok := appendWithCookie(nil, b, h, cookie); ok {
		if _, err := c.PacketConn.WriteTo(out, addr); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// ReadFrom hands pion every datagram but the gateway's HelloVerifyRequests, which it answers.
func (c *helloConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || n == 0 || b[0] != contentHandshake || c.done.Load() {
			return n, addr, err
		}
		if isServerHello(b[:n]) {
			c.finish()
			return n, addr, nil
		}
		cookie, ok := parseHelloVerify(b[:n])
		if !ok {
			return n, addr, nil
		}
		c.answer(cookie, addr)
	}
}

// answer sends the first ClientHello again, with cookie, if the HelloVerifyRequest came from
// where it went and the bound allows; otherwise the HelloVerifyRequest is ignored. A failed
// send is left to pion's retransmission of the ClientHello, which carries the cookie too.
func (c *helloConn) answer(cookie []byte, from net.Addr) {
	c.mu.Lock()
	if c.hello == nil || !sameUDPAddr(from, c.to) || c.verifies >= maxHelloVerifies {
		c.mu.Unlock()
		return
	}
	c.verifies++
	c.cookie = append(c.cookie[:0], cookie...)
	h, _ := parseClientHello(c.hello) // parsed when it was saved
	out, ok := appendWithCookie(nil, c.hello, h, c.cookie)
	to := c.to
	c.mu.Unlock()
	if ok {
		_, _ = c.PacketConn.WriteTo(out, to)
	}
}

func (c *helloConn) finish() {
	c.done.Store(true)
	c.mu.Lock()
	c.hello, c.cookie = nil, nil
	c.mu.Unlock()
}

func sameUDPAddr(a, b net.Addr) bool {
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	if !ok1 || !ok2 {
		return false
	}
	pa, pb := ua.AddrPort(), ub.AddrPort()
	return netip.AddrPortFrom(pa.Addr().Unmap(), pa.Port()) == netip.AddrPortFrom(pb.Addr().Unmap(), pb.Port())
}

const handshakeServerHello = 2

// isServerHello reports whether b starts with a plaintext epoch-0 handshake record whose
// first message is a ServerHello.
func isServerHello(b []byte) bool {
	return len(b) > headerLen && b[0] == contentHandshake && be16(b[3:5]) == 0 &&
		b[headerLen] == handshakeServerHello
}
