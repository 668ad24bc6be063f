package client

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/internal/packet"
	"github.com/dstmgw/dstm/tunnel"
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

	// Packets from the tunnel are written to the device in batches, so that it can coalesce
	// TCP segments: by the link's reader itself when nothing waits in the queue (no hand-off),
	// otherwise through the queue and one writer; when the queue is full the newest is
	// dropped. wmu is held while writing; pending counts the packets queued and not yet
	// written, so that no packet overtakes one queued before it.
	queue   chan *[]byte
	wmu     sync.Mutex
	pending atomic.Int64
	direct  []*[]byte // the direct write's buffers, under wmu
	dbufs   [][]byte  // and their views for the device, under wmu
	bufs    sync.Pool
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	dropped atomic.Uint64 // packets not from the gateway's side of the lease, or no link
	lastRx  atomic.Int64  // unix nanoseconds of the last packet from the tunnel
}

type linkRef struct{ l tunnel.Link }

// tunQueueLen bounds the packets waiting for the TUN writer; tunBatch is the most written at once.
const (
	tunQueueLen = 1024
	tunBatch    = 64
)

// newTunSide wraps dev for a lease and starts its writer; the keepalive clock starts now.
func newTunSide(dev tun.Device, mtu int, lease [4]byte) *tunSide {
	t := &tunSide{
		dev: dev, mtu: mtu, lease: lease,
		queue: make(chan *[]byte, tunQueueLen), stop: make(chan struct{}), done: make(chan struct{}),
	}
	t.bufs.New = func() any { b := make([]byte, tunHeadroom+65535); return &b }
	t.lastRx.Store(time.Now().UnixNano())
	go t.routineWriteTUN()
	return t
}

// close stops the writer goroutine and waits for it; queued packets are dropped.
func (t *tunSide) close() {
	t.once.Do(func() { close(t.stop) })
	<-t.done
}

// routineWriteTUN writes queued packets to the TUN device, as many as are waiting at once.
func (t *tunSide) routineWriteTUN() {
	defer close(t.done)
	batch := make([]*[]byte, 0, tunBatch)
	bufs := make([][]byte, 0, tunBatch)
	for {
		select {
		case <-t.stop:
			return
		case b := <-t.queue:
			batch = append(batch[:0], b)
		}
		t.wmu.Lock()
	drain:
		for len(batch) < tunBatch {
			select {
			case b := <-t.queue:
				batch = append(batch, b)
			default:
				break drain
			}
		}
		bufs = bufs[:0]
		for _, b := range batch {
			bufs = append(bufs, *b)
		}
		if _, err := t.dev.Write(bufs, tunHeadroom); err != nil {
			t.dropped.Add(uint64(len(bufs)))
		}
		t.pending.Add(-int64(len(batch)))
		t.wmu.Unlock()
		for _, b := range batch {
			t.bufs.Put(b)
		}
	}
}

func (t *tunSide) setLink(l tunnel.Link) {
	if l == nil {
		t.link.Store(nil)
		return
	}
	t.link.Store(&linkRef{l: l})
}

// ReceivePackets writes packets from the tunnel to the TUN device, or queues them for its
// writer when packets wait there or it is writing. Only packets addressed to the lease are
// accepted.
func (t *tunSide) ReceivePackets(pkts [][]byte) {
	if t.pending.Load() == 0 && t.wmu.TryLock() {
		if t.pending.Load() == 0 {
			t.writeDirect(pkts)
			t.wmu.Unlock()
			return
		}
		t.wmu.Unlock()
	}
	for _, p := range pkts {
		if b := t.copyIn(p); b != nil {
			t.pending.Add(1)
			select {
			case t.queue <- b:
			default:
				t.pending.Add(-1)
				t.dropped.Add(1)
				t.bufs.Put(b)
			}
		}
	}
}

// writeDirect writes pkts to the device in batches of tunBatch; the caller holds wmu.
func (t *tunSide) writeDirect(pkts [][]byte) {
	for len(pkts) > 0 {
		n := min(len(pkts), tunBatch)
		t.direct, t.dbufs = t.direct[:0], t.dbufs[:0]
		for _, p := range pkts[:n] {
			if b := t.copyIn(p); b != nil {
				t.direct = append(t.direct, b)
				t.dbufs = append(t.dbufs, *b)
			}
		}
		if len(t.dbufs) > 0 {
			if _, err := t.dev.Write(t.dbufs, tunHeadroom); err != nil {
				t.dropped.Add(uint64(len(t.dbufs)))
			}
		}
		for i, b := range t.direct {
			t.bufs.Put(b)
			t.direct[i] = nil
		}
		clear(t.dbufs)
		pkts = pkts[n:]
	}
}

// copyIn checks pkt and copies it into a buffer with the device's headroom; nil: dropped.
func (t *tunSide) copyIn(pkt []byte) *[]byte {
	if packet.Check(pkt) != nil || [4]byte(pkt[16:20]) != t.lease {
		t.dropped.Add(1)
		return nil
	}
	t.lastRx.Store(time.Now().UnixNano())
	b := t.bufs.Get().(*[]byte)
	buf := (*b)[:cap(*b)]
	n := copy(buf[tunHeadroom:], pkt)
	*b = buf[:tunHeadroom+n]
	return b
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
