//go:build linux

package plain

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/dstmgw/dstm/tunnel"
)

type link struct {
	srv      *Server
	endpoint netip.Addr
	recv     tunnel.Receiver
	peer     [16]byte // endpoint, as the writers send to it
	closed   atomic.Bool
	done     chan struct{} // closed by Close
}

var (
	_ tunnel.Link         = (*link)(nil)
	_ tunnel.DirectWriter = (*link)(nil)
)

// WritesDirect reports true: the link sends on the raw socket all sessions share, and never
// waits on this peer (tunnel.DirectWriter).
func (*link) WritesDirect() bool { return true }

// WritePackets sends pkts to the peer. Packets the kernel refuses (e.g.
// EMSGSIZE) are skipped and counted; the first such error is returned after
// the rest were sent.
func (l *link) WritePackets(pkts [][]byte) error {
	if l.closed.Load() {
		return net.ErrClosed
	}
	w := l.srv.getWriter()
	defer l.srv.putWriter(w)
	var first error
	for len(pkts) > 0 {
		if len(pkts[0]) == 0 {
			pkts = pkts[1:]
			continue
		}
		sent, err := w.write(l.peer, pkts)
		l.account(pkts[:sent])
		pkts = pkts[sent:]
		if err == nil {
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return net.ErrClosed
		}
		l.srv.stats.writeErrors.Add(1)
		if first == nil {
			first = fmt.Errorf("plain: send to %s: %w", l.endpoint, err)
		}
		pkts = pkts[1:] // the packet at the error was not sent; skip it
	}
	return first
}

func (l *link) account(sent [][]byte) {
	if len(sent) == 0 {
		return
	}
	var bytes uint64
	for _, p := range sent {
		bytes += uint64(len(p))
	}
	l.srv.stats.txPackets.Add(uint64(len(sent)))
	l.srv.stats.txBytes.Add(bytes)
}

// Close unregisters the link; later writes fail with net.ErrClosed.
func (l *link) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.srv.unregister(l)
	close(l.done)
	return nil
}

// Done is closed when the link is closed: a raw IP peer never ends a link itself.
func (l *link) Done() <-chan struct{} { return l.done }

// Endpoint returns the peer's outer IPv6 address (port 0).
func (l *link) Endpoint() netip.AddrPort { return netip.AddrPortFrom(l.endpoint, 0) }

// Transport returns tunnel.Plain.
func (l *link) Transport() string { return tunnel.Plain }

// ClientLink is the client side: a socket of its own with one peer.
type ClientLink struct {
	*link
}

// Dial opens a raw socket on local that exchanges packets with remote only
// and delivers them to r. Closing the link closes the socket.
func Dial(local, remote netip.Addr, r tunnel.Receiver) (*ClientLink, error) {
	s, err := Listen(local)
	if err != nil {
		return nil, err
	}
	l, err := s.register(remote.Unmap().WithZone(""), r)
	if err != nil {
		s.Close()
		return nil, err
	}
	return &ClientLink{link: l}, nil
}

// Stats returns the counters of the client's socket.
func (c *ClientLink) Stats() Stats { return c.srv.Stats() }

// Close unregisters the peer and closes the socket, waiting for its reader.
func (c *ClientLink) Close() error {
	c.link.Close()
	return c.srv.Close()
}
