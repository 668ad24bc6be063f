//go:build linux

package plain

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/dstmgw/dstm/tunnel"
)

// Sizing of the socket and its batches.
const (
	SocketBuffer = 8 << 20   // receive and send buffer
	BatchSize    = 64        // packets per recvmmsg/sendmmsg call
	MaxPacket    = 1<<16 - 1 // larger inner packets are dropped
)

// ErrEndpointInUse is returned by Register for an endpoint that already has a link.
var ErrEndpointInUse = errors.New("plain: endpoint already registered")

// Stats are the socket's counters since Listen.
type Stats struct {
	RxPackets, RxBytes uint64 // delivered to a receiver
	TxPackets, TxBytes uint64 // accepted by the kernel
	UnknownSource      uint64 // dropped: outer source not registered
	Truncated          uint64 // dropped: larger than MaxPacket
	WriteErrors        uint64 // packets the kernel refused
}

type counters struct {
	rxPackets, rxBytes, txPackets, txBytes atomic.Uint64
	unknown, truncated, writeErrors        atomic.Uint64
}

// Server is a raw IPv6 socket for next header 4 bound to one local address,
// demultiplexing received packets by outer source to registered receivers.
type Server struct {
	conn    *net.IPConn
	rc      syscall.RawConn
	local   netip.Addr
	peers   peerTable
	mu      sync.Mutex // serialises changes to peers
	wmu     sync.Mutex
	writers []*writer // free writers: as many as writes ever ran at once
	stats   counters
	done    chan struct{}
	once    sync.Once
	err     error
}

// Listen opens the raw socket on local (an IPv6 address of this host) and
// starts its reader goroutine. Close stops it.
func Listen(local netip.Addr) (*Server, error) {
	if !local.Is6() || local.Is4In6() {
		return nil, fmt.Errorf("plain: local address %s is not IPv6", local)
	}
	conn, err := net.ListenIP("ip6:4", &net.IPAddr{IP: local.AsSlice(), Zone: local.Zone()})
	if err != nil {
		return nil, fmt.Errorf("plain: listen ip6:4 on %s: %w", local, err)
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		err = setBuffers(rc, SocketBuffer)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("plain: socket setup: %w", err)
	}
	s := &Server{conn: conn, rc: rc, local: local, done: make(chan struct{})}
	s.peers.init()
	rd := newReader(rc, BatchSize, MaxPacket)
	go s.routineReadOutside(rd)
	return s, nil
}

// LocalAddr returns the address the socket is bound to.
func (s *Server) LocalAddr() netip.Addr { return s.local }

// Register attaches r to packets whose outer IPv6 source is endpoint and
// returns the link that sends to endpoint. Closing the link unregisters it.
func (s *Server) Register(endpoint netip.Addr, r tunnel.Receiver) (tunnel.Link, error) {
	return s.register(endpoint.Unmap().WithZone(""), r)
}

func (s *Server) register(endpoint netip.Addr, r tunnel.Receiver) (*link, error) {
	if !endpoint.Is6() {
		return nil, fmt.Errorf("plain: endpoint %s is not IPv6", endpoint)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return nil, net.ErrClosed
	default:
	}
	if s.peers.get(endpoint) != nil {
		return nil, fmt.Errorf("%w: %s", ErrEndpointInUse, endpoint)
	}
	l := &link{srv: s, endpoint: endpoint, peer: endpoint.As16(), recv: r, done: make(chan struct{})}
	s.peers.setLocked(endpoint, l)
	return l, nil
}

func (s *Server) unregister(l *link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers.get(l.endpoint) == l {
		s.peers.setLocked(l.endpoint, nil)
	}
}

// getWriter returns a free writer: links take one for each write, so that an idle link holds
// none.
func (s *Server) getWriter() *writer {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if n := len(s.writers); n > 0 {
		w := s.writers[n-1]
		s.writers = s.writers[:n-1]
		return w
	}
	return newWriter(s.rc, BatchSize)
}

func (s *Server) putWriter(w *writer) {
	s.wmu.Lock()
	s.writers = append(s.writers, w)
	s.wmu.Unlock()
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(),
		UnknownSource: c.unknown.Load(), Truncated: c.truncated.Load(), WriteErrors: c.writeErrors.Load(),
	}
}

// Close closes the socket and waits for the reader goroutine to stop. Links
// still registered fail their writes afterwards.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.err = s.conn.Close()
		<-s.done
	})
	return s.err
}

// routineReadOutside reads batches until the socket is closed, grouping
// consecutive packets from one source.
func (s *Server) routineReadOutside(rd *reader) {
	defer close(s.done)
	pkts := make([][]byte, 0, BatchSize)
	for {
		n, err := rd.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // transient socket errors (e.g. ENOMEM) must not stop the reader
		}
		s.deliver(rd, n, pkts)
	}
}

func (s *Server) deliver(rd *reader, n int, pkts [][]byte) {
	var cur *link
	for i := 0; i < n; i++ {
		pkt, src, trunc := rd.packet(i)
		if trunc {
			s.stats.truncated.Add(1)
			continue
		}
		l := s.peers.get(src)
		if l == nil {
			s.stats.unknown.Add(1)
			continue
		}
		if l != cur {
			pkts = s.flush(cur, pkts)
			cur = l
		}
		pkts = append(pkts, pkt)
	}
	s.flush(cur, pkts)
}

func (s *Server) flush(l *link, pkts [][]byte) [][]byte {
	if l == nil || len(pkts) == 0 {
		return pkts[:0]
	}
	var bytes uint64
	for _, p := range pkts {
		bytes += uint64(len(p))
	}
	s.stats.rxPackets.Add(uint64(len(pkts)))
	s.stats.rxBytes.Add(bytes)
	l.recv.ReceivePackets(pkts)
	clear(pkts)
	return pkts[:0]
}
