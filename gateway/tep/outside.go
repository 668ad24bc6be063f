package tep

import (
	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/internal/packet"
)

// rxBatch holds packets from the tunnel on their way into the TUN device.
// Each buffer holds a whole IPv4 packet after tunOffset so that the device
// can coalesce segments (GRO) in place.
type rxBatch struct {
	mem  [][]byte // full-capacity buffers, allocated on first use
	bufs [][]byte // views handed to the device
}

func newRxBatch() *rxBatch {
	return &rxBatch{mem: make([][]byte, writeBatch), bufs: make([][]byte, 0, writeBatch)}
}

func (rb *rxBatch) slot(n int) []byte {
	i := len(rb.bufs)
	if rb.mem[i] == nil {
		rb.mem[i] = make([]byte, tunOffset+0xffff)
	}
	b := rb.mem[i][:tunOffset+n]
	rb.bufs = append(rb.bufs, b)
	return b[tunOffset:]
}

func (t *TEP) getRx() *rxBatch { return t.rxs.Get().(*rxBatch) }

func (t *TEP) putRx(rb *rxBatch) {
	clear(rb.bufs)
	rb.bufs = rb.bufs[:0]
	t.rxs.Put(rb)
}

// ReceivePackets implements tunnel.Receiver. It does not retain pkts.
func (s *Session) ReceivePackets(pkts [][]byte) {
	if s.closed.Load() {
		s.tep.drop(DropNoSession, len(pkts))
		return
	}
	now := s.tep.cfg.Now().UnixNano()
	s.lastIn.Store(now)
	rules := s.rules.Load() // one load per batch: a swap applies from the next batch on
	rb := s.tep.getRx()
	for _, p := range pkts {
		s.receive(rb, p, rules, now)
		if len(rb.bufs) == writeBatch {
			s.flushRx(rb)
		}
	}
	s.flushRx(rb)
	s.tep.putRx(rb)
}

func (s *Session) receive(rb *rxBatch, pkt []byte, rules *sessionRules, now int64) {
	t := s.tep
	if err := packet.Check(pkt); err != nil {
		t.dropInvalid(pkt, err)
		return
	}
	pkt = packet.Trim(pkt)
	if [4]byte(pkt[12:16]) != s.lease {
		t.drop(DropSpoofedSource, 1)
		return
	}
	if rules != nil && !s.allowed(rules, acl.Outbound, pkt, now, nil) {
		return
	}
	if len(pkt) > s.mtu && packet.DF(pkt) {
		t.drop(DropTooBig, 1)
		s.icmpOutside(pkt)
		return
	}
	b := rb.slot(len(pkt))
	copy(b, pkt)
	packet.ClampMSS(b, s.mss)
}

// icmpOutside queues ICMP fragmentation-needed about pkt towards the client.
func (s *Session) icmpOutside(pkt []byte) {
	ob := s.tep.getOut()
	out, err := packet.AppendFragNeeded(ob.b[:0], pkt, s.tep.cfg.InnerAddr, uint16(s.mtu))
	s.enqueueGenerated(ob, out, err)
}

// enqueueGenerated queues a packet the TEP made towards the client (out, built in ob's
// buffer: ICMP or a TCP reset) within the ICMP rate limit; otherwise ob goes back to the pool.
func (s *Session) enqueueGenerated(ob *outBuf, out []byte, err error) {
	t := s.tep
	if err != nil || !t.icmp.Allow() {
		t.putOut(ob)
		return
	}
	ob.b = out
	t.sent.Add(1)
	s.enqueue(ob)
}

func (s *Session) flushRx(rb *rxBatch) {
	if len(rb.bufs) == 0 {
		return
	}
	n, bytes := len(rb.bufs), 0
	for _, b := range rb.bufs {
		bytes += len(b) - tunOffset
	}
	if _, err := s.tep.dev.Write(rb.bufs, tunOffset); err != nil {
		s.tep.drop(DropTUNError, n)
	} else {
		s.in.add(n, bytes)
	}
	clear(rb.bufs)
	rb.bufs = rb.bufs[:0]
}
