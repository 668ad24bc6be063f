package dtls

import (
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/pion/transport/v5/deadline"
)

type dgram struct {
	buf  []byte
	from netip.AddrPort
}

// poolBufSize covers a full-size record of a 1500-byte path; larger
// datagrams get a buffer of their own.
const poolBufSize = 2048

// peer is the virtual net.PacketConn under one pion server Conn: the Server
// pushes datagrams into its bounded queue, and WriteTo goes out through
// ServerConfig.Write.
type peer struct {
	srv    *Server
	queue  chan *dgram
	closed chan struct{}
	once   sync.Once
	rdl    *deadline.Deadline
	conn   atomic.Pointer[piondtls.Conn]

	// The last source address as a *net.UDPAddr, so that a steady stream
	// does not allocate one per datagram; only pion's reader touches it.
	rdAP  netip.AddrPort
	rdUDP *net.UDPAddr

	// mute drops pion's writes: set before the server closes a Conn it lets go after the
	// handshake, so that no close_notify ends the session the data records carry on.
	mute      atomic.Bool
	wmu       sync.Mutex
	lastWrite netip.AddrPort // destination of the last write
	// dataRemote is the address of the newest data record once data records carry the
	// link's packets; pion's writes go there too.
	dataRemote atomic.Pointer[netip.AddrPort]

	// Guarded by srv.mu.
	remote      netip.AddrPort // this peer's key in srv.byAddr
	source      netip.Addr     // counted in srv.perSource until established
	cids        [][CIDLen]byte // keys in srv.byCID
	established bool           // handshake done
}

var _ net.PacketConn = (*peer)(nil)

func newPeer(s *Server, from netip.AddrPort) *peer {
	return &peer{
		srv:       s,
		queue:     make(chan *dgram, s.cfg.QueueLen),
		closed:    make(chan struct{}),
		rdl:       deadline.New(),
		remote:    from,
		source:    from.Addr(),
		lastWrite: from,
	}
}

// deliver copies b into the queue; when it is full b is dropped and counted.
func (p *peer) deliver(b []byte, from netip.AddrPort) {
	if p.dropIfClosed() {
		return
	}
	d := p.srv.getDgram(len(b))
	d.buf = append(d.buf[:0], b...)
	p.enqueue(d, from)
}

// deliverHello delivers a datagram that starts with a ClientHello, without its cookie: pion
// does no cookie exchange of its own and must see the ClientHello the client's pion wrote,
// retransmissions included.
func (p *peer) deliverHello(b []byte, from netip.AddrPort) {
	h, ok := parseClientHello(b)
	if !ok || len(h.cookie) == 0 {
		p.deliver(b, from)
		return
	}
	p.deliverWithoutCookie(b, from, h)
}

func (p *peer) deliverWithoutCookie(b []byte, from netip.AddrPort, h clientHello) {
	if p.dropIfClosed() {
		return
	}
	d := p.srv.getDgram(len(b))
	d.buf, _ = appendWithCookie(d.buf[:0], b, h, nil) // a shorter record always fits
	p.enqueue(d, from)
}

// dropIfClosed reports whether the peer is closed, counting the datagram dropped if so.
func (p *peer) dropIfClosed() bool {
	select {
	case <-p.closed:
		p.srv.stats.droppedClosed.Add(1)
		return true
	default:
		return false
	}
}

func (p *peer) enqueue(d *dgram, from netip.AddrPort) {
	d.from = from
	select {
	case p.queue <- d:
	default:
		p.srv.putDgram(d)
		p.srv.stats.droppedQueueFull.Add(1)
	}
}

func (p *peer) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case <-p.closed:
		return 0, nil, net.ErrClosed
	default:
	}
	select {
	case d := <-p.queue:
		n := copy(b, d.buf)
		short := n < len(d.buf)
		addr := p.udpAddr(d.from)
		p.srv.putDgram(d)
		if short {
			return n, addr, io.ErrShortBuffer
		}
		return n, addr, nil
	case <-p.closed:
		return 0, nil, net.ErrClosed
	case <-p.rdl.Done():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (p *peer) udpAddr(ap netip.AddrPort) *net.UDPAddr {
	if p.rdUDP == nil || ap != p.rdAP {
		p.rdAP, p.rdUDP = ap, net.UDPAddrFromAddrPort(ap)
	}
	return p.rdUDP
}

// WriteTo implements net.PacketConn for pion. pion writes to the address of
// the newest authenticated record (RFC 9146 §6), so a new destination means
// that the peer roamed. Writes still go out after Close, so that pion's
// close_notify is not lost to the peer's teardown.
func (p *peer) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.AddrError{Err: "not a UDP address", Addr: addr.String()}
	}
	if p.mute.Load() {
		return len(b), nil
	}
	to := ua.AddrPort()
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	if d := p.dataRemote.Load(); d != nil {
		to = *d
	}
	p.wmu.Lock()
	if to != p.lastWrite {
		p.lastWrite = to
		p.srv.moveAddr(p, to)
	}
	p.wmu.Unlock()
	if err := p.srv.cfg.Write(b, to); err != nil {
		return 0, err
	}
	return len(b), nil
}

// generateCID is this peer's pion ConnectionIDGenerator: a fresh random
// CID, registered for routing before pion announces it.
func (p *peer) generateCID() []byte {
	var cid [CIDLen]byte
	for {
		_, _ = rand.Read(cid[:]) // never fails (crypto/rand, Go ≥ 1.24)
		if p.srv.registerCID(p, cid) {
			return cid[:]
		}
	}
}

// Close implements net.PacketConn: it unregisters the peer and releases
// pending reads.
func (p *peer) Close() error {
	p.once.Do(func() {
		close(p.closed)
		p.srv.removePeer(p)
		p.rdl.Set(time.Time{})
		for {
			select {
			case d := <-p.queue:
				p.srv.putDgram(d)
			default:
				return
			}
		}
	})
	return nil
}

func (p *peer) LocalAddr() net.Addr { return &net.UDPAddr{} }

func (p *peer) SetDeadline(t time.Time) error { return p.SetReadDeadline(t) }

func (p *peer) SetReadDeadline(t time.Time) error {
	p.rdl.Set(t)
	return nil
}

// The peer's writes never block, so its deadlines bound reads only.
func (p *peer) SetWriteDeadline(time.Time) error { return nil }

func (p *peer) setConn(c *piondtls.Conn) { p.conn.Store(c) }

// closeSession ends the peer: through its pion Conn when there is one (so
// an established peer gets a close_notify), else directly.
func (p *peer) closeSession() {
	if c := p.conn.Load(); c != nil {
		_ = c.Close()
	}
	_ = p.Close()
}
