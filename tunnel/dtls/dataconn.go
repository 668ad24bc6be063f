package dtls

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/tunnel/record"
	"github.com/dstmgw/dstm/tunnel/udpmux"
	"github.com/pion/transport/v5/deadline"
)

const (
	// clientBatch is the datagrams a client reads per system call.
	clientBatch = 16
	// pionQueueLen bounds the datagrams waiting for pion on a client (handshake flights,
	// DTLS records); when it is full the newest is dropped and counted.
	pionQueueLen = 256
)

// dataConn is the client's socket under pion. One reader goroutine reads it in batches
// (udpmux.BatchReader: recvmmsg, UDP GRO) when it is a *net.UDPConn or a RebindConn over
// one, one datagram at a time otherwise. Data records go to the link, a batch's packets
// together; every other datagram waits for pion's ReadFrom in a bounded queue.
type dataConn struct {
	net.PacketConn // the socket: writes and Close go to it
	link           atomic.Pointer[link]
	queue          chan pionDgram
	rdl            *deadline.Deadline
	closed         chan struct{}
	closeOnce      sync.Once
	readerDone     chan struct{}
	readErr        error // why the reader stopped; read after readerDone
	pool           sync.Pool
	droppedQueue   atomic.Uint64
}

type pionDgram struct {
	b    *[]byte
	from *net.UDPAddr
}

func newDataConn(c net.PacketConn) *dataConn {
	d := &dataConn{
		PacketConn: c, queue: make(chan pionDgram, pionQueueLen), rdl: deadline.New(),
		closed: make(chan struct{}), readerDone: make(chan struct{}),
	}
	go d.routineRead()
	return d
}

func (d *dataConn) routineRead() {
	defer close(d.readerDone)
	var err error
	switch c := d.PacketConn.(type) {
	case *RebindConn:
		err = c.readBatches(d.handle, d.endBatch)
	case *net.UDPConn:
		err = readBatches(udpmux.NewBatchReader(c, clientBatch, 65535), d.handle, d.endBatch)
	default:
		err = d.readSingle()
	}
	d.readErr = err
}

// readBatches reads with r until a read fails with net.ErrClosed (returned) or another error
// that is not transient.
func readBatches(r *udpmux.BatchReader, fn func([]byte, netip.AddrPort), end func()) error {
	var pause errorPause
	for {
		_, err := r.Read(fn, nil)
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		if pause.after(err) { // e.g. ECONNREFUSED after an ICMP error: the socket goes on
			continue
		}
		end()
	}
}

// errorPause makes a reader wait after a run of transient read errors, so that an error that
// persists does not spin a core.
type errorPause struct{ n int }

// after takes a read's error and reports whether there was one.
func (p *errorPause) after(err error) bool {
	if err == nil {
		p.n = 0
		return false
	}
	if p.n++; p.n > 16 {
		time.Sleep(min(time.Duration(p.n-16)*time.Millisecond, 100*time.Millisecond))
	}
	return true
}

func (d *dataConn) readSingle() error {
	buf := make([]byte, 65536)
	var pause errorPause
	for {
		n, addr, err := d.PacketConn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		if pause.after(err) {
			continue
		}
		if ua, ok := addr.(*net.UDPAddr); ok {
			d.handle(buf[:n], ua.AddrPort())
			d.endBatch()
		}
	}
}

// handle takes one datagram of a batch.
func (d *dataConn) handle(b []byte, from netip.AddrPort) {
	if len(b) == 0 {
		return
	}
	if b[0] == record.Type {
		if l := d.link.Load(); l != nil {
			l.receiveData(b, from, true)
		}
		return
	}
	bp, _ := d.pool.Get().(*[]byte)
	if bp == nil {
		nb := make([]byte, 0, 2048)
		bp = &nb
	}
	*bp = append((*bp)[:0], b...)
	select {
	case d.queue <- pionDgram{b: bp, from: net.UDPAddrFromAddrPort(from)}:
	default:
		d.pool.Put(bp)
		d.droppedQueue.Add(1)
	}
}

func (d *dataConn) endBatch() {
	if l := d.link.Load(); l != nil {
		l.flushPending()
	}
}

// ReadFrom is pion's read: the next datagram that is not a data record.
func (d *dataConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case <-d.closed:
		return 0, nil, net.ErrClosed
	default:
	}
	select {
	case p := <-d.queue:
		n := copy(b, *p.b)
		short := n < len(*p.b)
		d.pool.Put(p.b)
		if short {
			return n, p.from, io.ErrShortBuffer
		}
		return n, p.from, nil
	case <-d.closed:
		return 0, nil, net.ErrClosed
	case <-d.readerDone:
		if d.readErr != nil {
			return 0, nil, d.readErr
		}
		return 0, nil, net.ErrClosed
	case <-d.rdl.Done():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// SetReadDeadline bounds pion's reads; the reader goroutine has none.
func (d *dataConn) SetReadDeadline(t time.Time) error {
	d.rdl.Set(t)
	return nil
}

// SetDeadline sets the read deadline and the socket's write deadline.
func (d *dataConn) SetDeadline(t time.Time) error {
	d.rdl.Set(t)
	return d.PacketConn.SetWriteDeadline(t)
}

// Close closes the socket and waits for the reader.
func (d *dataConn) Close() error {
	var err error
	d.closeOnce.Do(func() {
		close(d.closed)
		err = d.PacketConn.Close()
		<-d.readerDone
	})
	return err
}
