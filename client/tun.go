package client

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/gateway/packet"
	"github.com/dstmgw/dstm/gateway/tunnel"
)

// tunHeadroom is the space wireguard's TUN Write needs in front of each packet (virtio header).
const tunHeadroom = 16

// tunSide is the client's inside: packets from the tunnel are written to the TUN device and
// packets read from it go to the current link.
type tunSide struct {
	dev   tun.Device
	mtu   int
	lease [4]byte
	link  atomic.Pointer[linkRef]

	wmu  sync.Mutex // guards wbuf
	wbuf []byte

	dropped atomic.Uint64 // packets not from the gateway's side of the lease, or no link
	lastRx  atomic.Int64  // unix nanoseconds of the last packet from the tunnel
}

type linkRef struct{ l tunnel.Link }

// newTunSide wraps dev for a lease; the keepalive clock starts now.
func newTunSide(dev tun.Device, mtu int, lease [4]byte) *tunSide {
	t := &tunSide{dev: dev, mtu: mtu, lease: lease, wbuf: make([]byte, tunHeadroom+65535)}
	t.lastRx.Store(time.Now().UnixNano())
	return t
}

func (t *tunSide) setLink(l tunnel.Link) {
	if l == nil {
		t.link.Store(nil)
		return
	}
	t.link.Store(&linkRef{l: l})
}

// ReceivePacket writes a packet from the tunnel to the TUN device. Only packets addressed to
// the lease are accepted.
func (t *tunSide) ReceivePacket(pkt []byte) {
	if packet.Check(pkt) != nil || [4]byte(pkt[16:20]) != t.lease {
		t.dropped.Add(1)
		return
	}
	t.lastRx.Store(time.Now().UnixNano())
	t.wmu.Lock()
	defer t.wmu.Unlock()
	n := copy(t.wbuf[tunHeadroom:], pkt)
	if _, err := t.dev.Write([][]byte{t.wbuf[:tunHeadroom+n]}, tunHeadroom); err != nil {
		t.dropped.Add(1)
	}
}

// run reads the TUN device in batches and hands the packets to the current link until the
// device is closed.
func (t *tunSide) run() error {
	batch := t.dev.BatchSize()
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	pkts := make([][]byte, 0, batch)
	for i := range bufs {
		bufs[i] = make([]byte, tunHeadroom+65535)
	}
	for {
		n, err := t.dev.Read(bufs, sizes, tunHeadroom)
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				continue
			}
			return err
		}
		pkts = pkts[:0]
		for i := range n {
			p := bufs[i][tunHeadroom : tunHeadroom+sizes[i]]
			if len(p) < 20 || p[0]>>4 != 4 { // the kernel's IPv6 chatter on the TUN device
				t.dropped.Add(1)
				continue
			}
			pkts = append(pkts, p)
		}
		if len(pkts) == 0 {
			continue
		}
		ref := t.link.Load()
		if ref == nil {
			t.dropped.Add(uint64(n))
			continue
		}
		_ = ref.l.WritePackets(pkts)
	}
}
