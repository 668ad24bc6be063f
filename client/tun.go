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

	// Packets from the tunnel queue for one writer that writes them in batches, so that the
	// device can coalesce TCP segments; when the queue is full the newest is dropped.
	queue chan *[]byte
	bufs  sync.Pool
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

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

// ReceivePackets queues packets from the tunnel for the TUN device. Only packets addressed to
// the lease are accepted.
func (t *tunSide) ReceivePackets(pkts [][]byte) {
	for _, p := range pkts {
		t.receive(p)
	}
}

func (t *tunSide) receive(pkt []byte) {
	if packet.Check(pkt) != nil || [4]byte(pkt[16:20]) != t.lease {
		t.dropped.Add(1)
		return
	}
	t.lastRx.Store(time.Now().UnixNano())
	b := t.bufs.Get().(*[]byte)
	buf := (*b)[:cap(*b)]
	n := copy(buf[tunHeadroom:], pkt)
	*b = buf[:tunHeadroom+n]
	select {
	case t.queue <- b:
	default:
		t.dropped.Add(1)
		t.bufs.Put(b)
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
