package udpmux

import (
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// offloadOOB is the control-message room for one UDP_SEGMENT or UDP_GRO value.
var offloadOOB = unix.CmsgSpace(2)

// canGSO reports whether the kernel takes UDP_SEGMENT on c (Linux 4.18 and later).
func canGSO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// enableGRO asks the kernel to coalesce a flow's datagrams of one size (UDP_GRO, Linux 5.0
// and later) and reports whether it will.
func enableGRO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// appendGSO appends a UDP_SEGMENT control message of size seg to oob.
func appendGSO(oob []byte, seg uint16) []byte {
	n := len(oob)
	oob = append(oob, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[n]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[n+unix.CmsgLen(0)])) = seg
	return oob
}

// groSize returns the segment size of a coalesced read from its control messages, 0 for a
// single datagram.
func groSize(oob []byte) int {
	for len(oob) > unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 2 {
			return int(*(*uint16)(unsafe.Pointer(&data[0])))
		}
		oob = rest
	}
	return 0
}

// gsoRefused reports whether a send failed for its UDP_SEGMENT (then the datagrams go again
// without it), and whether GSO is off for good: EIO when the device has no checksum offload,
// which segmentation needs. EINVAL (a segment over the path MTU, which an ICMPv6 Packet Too
// Big can lower for one destination) only costs that send its GSO.
func gsoRefused(err error) (off, refused bool) {
	switch {
	case errors.Is(err, unix.EIO):
		return true, true
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EMSGSIZE):
		return false, true
	}
	return false, false
}
