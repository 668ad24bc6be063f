package gateway

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/tsp"
)

// udpQueueLen bounds the TSP datagrams waiting for a worker. When it is full the newest
// datagram is dropped and counted: the client retransmits (RTO 2 s) and gets its answer then.
const udpQueueLen = 1024

// udpWorkers step TSP machines off the UDP reader goroutine, so a lease commit never stalls
// the DTLS datagrams that share the socket. A worker waits on the lease store's batched
// commit (an fsync and up to boltstore.DefaultCommitDelay, milliseconds), so there are many
// of them to let commits batch: with 64, 128 clients made ~3,900 sessions/s, with 256
// ~4,400/s (BenchmarkTSPSessionUDP). An idle worker is a parked goroutine.
const udpWorkers = 256

// udpLinger keeps a closed UDP session around to answer late retransmissions of its last reply.
const udpLinger = 30 * time.Second

type udpDatagram struct {
	b    []byte
	from netip.AddrPort
}

// udpTSP serves TSP over UDP ("reliable UDP", tsp-wire-notes §2.3): sessions keyed by the
// client's (address, port), one reply per datagram, idempotent answers to retransmissions.
type udpTSP struct {
	g     *Gateway
	write func(b []byte, to netip.AddrPort) error
	queue chan udpDatagram

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
}

type udpSession struct {
	mu     sync.Mutex
	ds     *tsp.DatagramSession
	s      *session
	last   time.Time
	start  time.Time
	closed bool // machine closed: only retransmissions are answered
	done   bool // tunnel established and counted
}

func newUDPTSP(g *Gateway, write func([]byte, netip.AddrPort) error) *udpTSP {
	return &udpTSP{g: g, write: write, queue: make(chan udpDatagram, udpQueueLen), sessions: map[netip.AddrPort]*udpSession{}}
}

// HandleDatagram implements udpmux.Handler: it copies the datagram to the worker queue.
func (u *udpTSP) HandleDatagram(b []byte, from netip.AddrPort) {
	select {
	case u.queue <- udpDatagram{b: append([]byte(nil), b...), from: from}:
	default:
		u.g.countDrop("tsp_udp_queue_full")
	}
}

// run starts the workers and the idle sweeper; it returns when ctx ends.
func (u *udpTSP) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range udpWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case d := <-u.queue:
					u.handle(ctx, d)
				}
			}
		}()
	}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			u.sweep()
		}
	}
}

func (u *udpTSP) handle(ctx context.Context, d udpDatagram) {
	us := u.session(d.from)
	if us == nil { // refused (source limit): answer 530 behind the client's header
		if h, _, err := tsp.ParseDatagram(d.b); err == nil {
			_ = u.write(tsp.AppendDatagram(nil, h, tsp.NewStatus(tsp.StatusServerTooBusy).Marshal()), d.from)
		}
		return
	}
	us.mu.Lock()
	if u.restarted(us, d.b) {
		us.mu.Unlock()
		u.forget(d.from, us)
		if us = u.session(d.from); us == nil {
			return
		}
		us.mu.Lock()
	}
	defer us.mu.Unlock()
	us.last = u.g.now()
	reply, err := us.ds.Handle(ctx, d.b)
	if reply != nil {
		if werr := u.write(reply, d.from); werr != nil {
			us.s.log.Debug().Err(werr).Msg("UDP reply failed")
		}
	}
	switch {
	case errors.Is(err, tsp.ErrStale), errors.Is(err, tsp.ErrMalformed) && reply == nil:
		u.g.countDrop("tsp_udp_bad_datagram")
		return
	case err != nil && !us.closed:
		us.closed = true
		u.g.sessionFailed(us.s, tsp.TransportUDP, us.start, err, us.done)
		u.g.endSession(us.s, lease.ReasonClosed)
		return
	}
	if _, _, ok := us.ds.Server().Established(); ok && !us.done {
		us.done = true
		u.g.metrics.ObserveHandshake("tsp-udp", "ok", u.g.now().Sub(us.start))
		u.g.metrics.TSPStatus(tsp.StatusSuccess)
	}
	if us.ds.Server().State() == tsp.StateClosed && !us.closed {
		us.closed = true
		u.g.endSession(us.s, lease.ReasonClosed)
	}
}

// restarted reports whether a datagram opens a new TSP exchange from an address and port that
// still has one: a VERSION at a sequence older than the last answered one (a client that
// reconnects from the same port, or a NAT reusing it). Retransmissions have the same sequence.
func (u *udpTSP) restarted(us *udpSession, dgram []byte) bool {
	h, payload, err := tsp.ParseDatagram(dgram)
	if err != nil || !us.ds.Answered() || h.Seq == us.ds.LastSeq() {
		return false
	}
	_, verr := tsp.ParseVersion(payload)
	return verr == nil
}

// forget drops the control state of one client address and port. An established tunnel keeps
// its lease and data plane (it ends with its lease), anything else ends now.
func (u *udpTSP) forget(from netip.AddrPort, us *udpSession) {
	u.mu.Lock()
	if u.sessions[from] == us {
		delete(u.sessions, from)
	}
	u.mu.Unlock()
	us.mu.Lock()
	done, closed := us.done, us.closed
	us.mu.Unlock()
	if !done && !closed {
		u.g.endSession(us.s, lease.ReasonClosed)
	}
}

// session finds or creates the UDP session of a client address and port.
func (u *udpTSP) session(from netip.AddrPort) *udpSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	if us := u.sessions[from]; us != nil {
		return us
	}
	s := u.g.newSession("udp", from, "", nil)
	if !u.g.sessions.add(s, u.g.cfg.TSP.MaxSessionsPerSource) {
		// Counted, not logged: a datagram flood must not become a log flood.
		u.g.countDrop("tsp_source_limit")
		u.g.metrics.TSPStatus(tsp.StatusServerTooBusy)
		return nil
	}
	m, _, err := u.g.newMachine(s, tsp.TransportUDP, auth.Identity{})
	if err != nil {
		s.log.Error().Err(err).Msg("cannot start TSP session")
		u.g.sessions.remove(s)
		return nil
	}
	ds, err := tsp.NewDatagramSession(m)
	if err != nil {
		u.g.sessions.remove(s)
		return nil
	}
	now := u.g.now()
	us := &udpSession{ds: ds, s: s, last: now, start: now}
	u.sessions[from] = us
	return us
}

// sweep forgets idle UDP control state. A session whose tunnel is established keeps its lease
// and data plane (gogoc never speaks again after accept); they end with the lease. A session
// that never got established is ended.
func (u *udpTSP) sweep() {
	now := u.g.now()
	u.mu.Lock()
	var stale []*udpSession
	for k, us := range u.sessions {
		us.mu.Lock()
		idle := now.Sub(us.last)
		limit := u.g.cfg.TSP.UDPIdleTimeout.D()
		if us.closed {
			limit = udpLinger
		}
		if idle > limit {
			delete(u.sessions, k)
			stale = append(stale, us)
		}
		us.mu.Unlock()
	}
	u.mu.Unlock()
	for _, us := range stale {
		us.mu.Lock()
		done, closed := us.done, us.closed
		us.mu.Unlock()
		if !done && !closed {
			us.s.log.Info().Str("reason", "UDP control session idle before the tunnel was established").Msg("TSP session ended")
			u.g.endSession(us.s, lease.ReasonClosed)
		}
	}
}
