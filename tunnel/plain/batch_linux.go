package plain

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reader is the receive half of the socket: recvmmsg into fixed buffers.
// It is used by one goroutine only.
type reader struct {
	rc    syscall.RawConn
	bufs  [][]byte
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	n     int
	err   error
	fn    func(fd uintptr) bool
}

func newReader(rc syscall.RawConn, batch, size int) *reader {
	r := &reader{
		rc:    rc,
		bufs:  make([][]byte, batch),
		hdrs:  make([]unix.Mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch),
	}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, size)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.fn = r.recv
	return r
}

func (r *reader) read() (int, error) {
	for i := range r.hdrs {
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Hdr.Flags = 0
		r.hdrs[i].Len = 0
	}
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	return r.n, r.err
}

func (r *reader) recv(fd uintptr) bool {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), 0, 0, 0)
	if errno == unix.EAGAIN || errno == unix.EINTR {
		return false
	}
	r.n, r.err = int(n), nil
	if errno != 0 {
		r.n, r.err = 0, errno
	}
	return true
}

// packet returns the i-th received packet, its outer source and whether it
// was truncated.
func (r *reader) packet(i int) ([]byte, netip.Addr, bool) {
	h := &r.hdrs[i]
	src := netip.AddrFrom16(r.names[i].Addr)
	return r.bufs[i][:h.Len], src, h.Hdr.Flags&unix.MSG_TRUNC != 0
}

// writer is a send half: sendmmsg of caller buffers to peer. Writers are
// pooled by the Server and taken for one write at a time.
type writer struct {
	rc   syscall.RawConn
	peer unix.RawSockaddrInet6
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	n    int
	sent int
	err  error
	fn   func(fd uintptr) bool
}

func newWriter(rc syscall.RawConn, batch int) *writer {
	w := &writer{
		rc:   rc,
		peer: unix.RawSockaddrInet6{Family: unix.AF_INET6},
		hdrs: make([]unix.Mmsghdr, batch),
		iovs: make([]unix.Iovec, batch),
	}
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Iov = &w.iovs[i]
		w.hdrs[i].Hdr.SetIovlen(1)
		w.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.peer))
		w.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	}
	w.fn = w.send
	return w
}

// write sends up to len(w.hdrs) packets to peer and returns how many the
// kernel accepted; on an error the packet at that index was not sent.
func (w *writer) write(peer [16]byte, pkts [][]byte) (int, error) {
	w.peer.Addr = peer
	w.n = min(len(pkts), len(w.hdrs))
	for i := 0; i < w.n; i++ {
		if len(pkts[i]) == 0 {
			w.n = i
			break
		}
		w.iovs[i].Base = &pkts[i][0]
		w.iovs[i].SetLen(len(pkts[i]))
	}
	if w.n == 0 {
		return 0, nil
	}
	if err := w.rc.Write(w.fn); err != nil {
		return 0, err
	}
	for i := 0; i < w.n; i++ {
		w.iovs[i].Base = nil // do not keep the caller's buffers reachable
	}
	return w.sent, w.err
}

func (w *writer) send(fd uintptr) bool {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[0])), uintptr(w.n), 0, 0, 0)
	if errno == unix.EAGAIN || errno == unix.EINTR {
		return false
	}
	w.sent, w.err = int(n), nil
	if errno != 0 {
		w.sent, w.err = 0, errno
	}
	return true
}

// setBuffers sizes the socket buffers, forcing past the sysctl limits when
// permitted (CAP_NET_ADMIN) and falling back to the ordinary options.
func setBuffers(rc syscall.RawConn, size int) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], size) == nil {
				continue
			}
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], size); err != nil {
				serr = err
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func socketBuffer(rc syscall.RawConn, opt int) (int, error) {
	var v int
	var gerr error
	err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt) })
	if err != nil {
		return 0, err
	}
	return v, gerr
}
