//go:build linux

// Package park lets the readers of idle connections wait without a goroutine. A reader with
// nothing buffered parks its connection (Conn.Park) and returns; one goroutine for all of
// them waits in epoll and resumes the reader, in a new goroutine, once a read would not
// block (data, end of stream, an error), at the reader's deadline, or when the connection is
// closed. An idle tunnel then costs its state, not a goroutine stack (docs/reliability.md,
// "Idle memory per session").
//
// The connection stays registered with Go's own poller: parking adds it, level-triggered and
// one-shot, to a second epoll instance, and the resumed reader reads as usual.
package park

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Poller waits for the parked connections. Its methods are safe for concurrent use.
type Poller struct {
	epfd int
	efd  int // eventfd: Close wakes the loop

	mu      sync.Mutex // guards the fields below and every registration in epfd
	waiters map[uint32]*waiter
	next    uint32
	closed  bool

	done chan struct{} // closed when the loop has returned
}

// waiter is one parked read.
type waiter struct {
	id     uint32
	c      *Conn
	resume func()
	timer  *time.Timer // the reader's deadline; nil without one
}

// idWake is the epoll data of the eventfd; waiters get the other ids.
const idWake = 0

// New starts a Poller.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("park: epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("park: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: idWake}); err != nil {
		unix.Close(efd)
		unix.Close(epfd)
		return nil, fmt.Errorf("park: epoll_ctl: %w", err)
	}
	p := &Poller{epfd: epfd, efd: efd, waiters: map[uint32]*waiter{}, done: make(chan struct{})}
	go p.loop()
	return p, nil
}

// Close resumes every parked reader, which then reads as if it had never parked, and makes
// later Park calls report false.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, err := unix.Write(p.efd, one[:])
	<-p.done
	unix.Close(p.efd)
	unix.Close(p.epfd)
	if err != nil {
		return fmt.Errorf("park: wake the poller: %w", err)
	}
	return nil
}

// Parked returns how many readers are parked now.
func (p *Poller) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters)
}

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil { // cannot happen with valid arguments; no reader stays stuck
			p.resumeAll()
			return
		}
		for _, ev := range events[:n] {
			if id := uint32(ev.Fd); id != idWake {
				p.fire(id)
				continue
			}
			p.resumeAll()
			return
		}
	}
}

// fire resumes the reader parked as id, if it still is.
func (p *Poller) fire(id uint32) {
	p.mu.Lock()
	w := p.takeLocked(id)
	p.mu.Unlock()
	if w != nil {
		go w.resume()
	}
}

func (p *Poller) resumeAll() {
	p.mu.Lock()
	p.closed = true
	var ws []*waiter
	for id := range p.waiters {
		ws = append(ws, p.takeLocked(id))
	}
	p.mu.Unlock()
	for _, w := range ws {
		go w.resume()
	}
}

// takeLocked removes the waiter id and its registration; nil if it is not parked.
func (p *Poller) takeLocked(id uint32) *waiter {
	w := p.waiters[id]
	if w == nil {
		return nil
	}
	delete(p.waiters, id)
	if w.c.w == w {
		w.c.w = nil
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	// Through Control, so that a descriptor closed meanwhile (which left the epoll set
	// with it) is not taken for a new connection that got its number.
	_ = w.c.rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	return w
}

// Conn is a connection whose reader can park. It must be the innermost wrapper of the socket:
// its Close, which every layer above calls, takes the registration out before the descriptor
// is closed and then resumes a parked reader, which reads the error.
type Conn struct {
	net.Conn
	rc syscall.RawConn
	p  *Poller
	w  *waiter // guarded by p.mu
	// closed: Close was called; guarded by p.mu.
	closed bool
}

// NewConn returns c, whose descriptor is raw, with reads that can park on p. A nil p gives a
// Conn that never parks.
func NewConn(c net.Conn, raw syscall.Conn, p *Poller) (*Conn, error) {
	rc, err := raw.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("park: %w", err)
	}
	return &Conn{Conn: c, rc: rc, p: p}, nil
}

// Park arranges for resume to be called in a new goroutine once a read would not block, at
// deadline (if not zero) or when c is closed, and reports true; then the caller must not read
// until resumed. It reports false, and the caller reads as usual, when c cannot park: the
// poller is closed, c is closed, or c already has a parked reader.
func (c *Conn) Park(deadline time.Time, resume func()) bool {
	p := c.p
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || c.closed || c.w != nil {
		return false
	}
	id := p.next + 1
	for id == idWake || p.waiters[id] != nil {
		id++
	}
	p.next = id
	var cerr error
	err := c.rc.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
			Fd:     int32(id),
		})
	})
	if err != nil || cerr != nil {
		return false
	}
	w := &waiter{id: id, c: c, resume: resume}
	p.waiters[id] = w
	c.w = w
	if !deadline.IsZero() {
		w.timer = time.AfterFunc(time.Until(deadline), func() { p.fire(id) })
	}
	return true
}

// Close closes the connection; a parked reader is resumed and reads net.ErrClosed.
func (c *Conn) Close() error {
	var w *waiter
	if p := c.p; p != nil {
		p.mu.Lock()
		c.closed = true
		if c.w != nil {
			w = p.takeLocked(c.w.id)
		}
		p.mu.Unlock()
	}
	err := c.Conn.Close()
	if w != nil {
		go w.resume()
	}
	return err
}
