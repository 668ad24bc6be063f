package tep

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/internal/packet"
)

type outBuf struct{ b []byte }

func (t *TEP) getOut() *outBuf { return t.outs.Get().(*outBuf) }

func (t *TEP) putOut(ob *outBuf) {
	ob.b = ob.b[:0]
	t.outs.Put(ob)
}

type insideScratch struct {
	bufs   [][]byte
	sizes  []int
	icmp   [][]byte  // one buffer with tunOffset headroom for ICMP errors and TCP resets
	direct [1][]byte // the batch of one that writeDirect hands to the link
}

func (t *TEP) newInsideScratch() *insideScratch {
	n := max(t.dev.BatchSize(), 1)
	sc := &insideScratch{bufs: make([][]byte, n), sizes: make([]int, n), icmp: [][]byte{make([]byte, tunOffset+packet.MaxICMPErrorLen)}}
	for i := range sc.bufs {
		sc.bufs[i] = make([]byte, tunOffset+t.cfg.MTU)
	}
	return sc
}

// routineReadInside reads the TUN device until it is closed.
func (t *TEP) routineReadInside() error {
	sc := t.newInsideScratch()
	failures := 0
	for {
		n, err := t.dev.Read(sc.bufs, sc.sizes, tunOffset)
		now := t.cfg.Now().UnixNano()
		for i := 0; i < n; i++ {
			t.handleInside(sc.bufs[i][tunOffset:tunOffset+sc.sizes[i]], sc, now, n == 1)
		}
		switch {
		case err == nil:
			failures = 0
		case errors.Is(err, os.ErrClosed) || t.isClosed():
			return nil
		case errors.Is(err, tun.ErrTooManySegments):
			t.drop(DropMalformed, 1)
		default:
			if failures++; failures >= maxReadErrors {
				return fmt.Errorf("tep: TUN read: %w", err)
			}
		}
	}
}

// handleInside sends one packet read from the TUN device to its session; lone says it was
// the only packet of its read (see Session.writeDirect).
func (t *TEP) handleInside(pkt []byte, sc *insideScratch, now int64, lone bool) {
	if err := packet.Check(pkt); err != nil {
		t.dropInvalid(pkt, err)
		return
	}
	pkt = packet.Trim(pkt)
	s := t.reg.lookupKey([4]byte(pkt[16:20]))
	if s == nil || s.closed.Load() {
		t.drop(DropNoSession, 1)
		if dst := packet.Dst(pkt); t.inPool(dst) {
			// From the unreachable address itself: the kernel drops
			// packets arriving with one of its own addresses as source.
			t.icmpInside(sc, pkt, dst, 0)
		}
		return
	}
	if rules := s.rules.Load(); rules != nil && !s.allowed(rules, acl.Inbound, pkt, now, sc) {
		return
	}
	s.sendOutside(pkt, sc, lone)
}

// dropInvalid counts a packet that failed packet.Check: IPv6 (the TUN
// devices' router solicitations and MLD reports) as not_ipv4, the rest as
// malformed.
func (t *TEP) dropInvalid(pkt []byte, err error) {
	if errors.Is(err, packet.ErrVersion) && pkt[0]>>4 == 6 {
		t.drop(DropNotIPv4, 1)
		return
	}
	t.drop(DropMalformed, 1)
}

// sendOutside queues pkt for the tunnel, or writes it to the link at once when it is lone
// (see writeDirect). Oversize DF packets get ICMP fragmentation-needed; oversize packets
// without DF are left to the outer layer to fragment.
func (s *Session) sendOutside(pkt []byte, sc *insideScratch, lone bool) {
	t := s.tep
	if len(pkt) > s.mtu && packet.DF(pkt) {
		t.drop(DropTooBig, 1)
		t.icmpInside(sc, pkt, packet.Dst(pkt), uint16(s.mtu))
		return
	}
	ref := s.link.Load()
	if ref == nil {
		t.drop(DropLinkError, 1)
		return
	}
	packet.ClampMSS(pkt, s.mss)
	if lone && ref.direct != nil && s.writeDirect(ref, pkt, sc) {
		return
	}
	ob := t.getOut()
	if len(pkt) > cap(ob.b) {
		t.putOut(ob)
		t.drop(DropTooBig, 1)
		return
	}
	ob.b = append(ob.b, pkt...)
	s.push(ob)
}

// enqueue queues ob for the tunnel, or drops it as link_error when no link is attached.
func (s *Session) enqueue(ob *outBuf) {
	if s.link.Load() == nil {
		s.tep.putOut(ob)
		s.tep.drop(DropLinkError, 1)
		return
	}
	s.push(ob)
}

// icmpInside writes an ICMP error about pkt back into the TUN device: host
// unreachable when mtu is 0, fragmentation needed otherwise.
func (t *TEP) icmpInside(sc *insideScratch, pkt []byte, src netip.Addr, mtu uint16) {
	var out []byte
	var err error
	if mtu == 0 {
		out, err = packet.AppendHostUnreachable(sc.icmp[0][:tunOffset], pkt, src)
	} else {
		out, err = packet.AppendFragNeeded(sc.icmp[0][:tunOffset], pkt, src, mtu)
	}
	if err != nil || !t.icmp.Allow() {
		return
	}
	t.writeInside(sc, out)
}

// writeInside writes out, a packet the TEP generated in sc.icmp[0] after
// tunOffset bytes of headroom, into the TUN device.
func (t *TEP) writeInside(sc *insideScratch, out []byte) {
	sc.icmp[0] = out
	// Counted first: the host may read the counters before Write returns.
	t.sent.Add(1)
	if _, err := t.dev.Write(sc.icmp, tunOffset); err != nil {
		t.sent.Add(^uint64(0))
		t.drop(DropTUNError, 1)
	}
	sc.icmp[0] = sc.icmp[0][:cap(sc.icmp[0])]
}

// writeDirect writes pkt to ref's link from the TUN reader, without the hand-off to the
// session's writer goroutine, when the link writes without waiting on its peer and nothing
// of the session is queued or being written (so no packet overtakes another). A lone packet
// is what a ping, a request or an ACK is: latency, not throughput. It reports false when pkt
// must be queued instead.
func (s *Session) writeDirect(ref *linkRef, pkt []byte, sc *insideScratch) bool {
	if !ref.direct.WritesDirect() || !s.beginDirect() {
		return false
	}
	sc.direct[0] = pkt
	s.write(ref, sc.direct[:])
	sc.direct[0] = nil
	s.endDirect()
	return true
}

func (s *Session) writeBatch(bufs []*outBuf, pkts [][]byte) {
	for _, ob := range bufs {
		pkts = append(pkts, ob.b)
	}
	s.write(s.link.Load(), pkts)
	clear(pkts)
}

// write sends pkts on ref's link and counts them, as sent or as link_error.
func (s *Session) write(ref *linkRef, pkts [][]byte) {
	if ref == nil {
		s.tep.drop(DropLinkError, len(pkts))
		return
	}
	bytes := 0
	for _, p := range pkts {
		bytes += len(p)
	}
	if err := ref.l.WritePackets(pkts); err != nil {
		s.tep.drop(DropLinkError, len(pkts))
	} else {
		s.out.add(len(pkts), bytes)
	}
}
