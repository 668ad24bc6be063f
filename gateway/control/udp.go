package control

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/metrics"
	"github.com/dstmgw/dstm/internal/limit"
	"github.com/dstmgw/dstm/tsp"
)

// udpQueueLen bounds the datagrams waiting for a worker; when it is full the newest is
// dropped and counted, and the client retransmits (RTO 2 s).
const udpQueueLen = 1024

// udpWorkers step TSP machines off the UDP reader goroutine, so that a lease commit never
// stalls the DTLS datagrams on the socket. Each waits on the lease store's batched commit, so
// many of them let commits batch; an idle one is a parked goroutine.
const udpWorkers = 256

// udpLinger is how long a closed exchange stays, to answer late retransmissions (or, after
// tsp.handshake_timeout, to drop them rather than have them open a new exchange).
const udpLinger = 30 * time.Second

// The sweep runs every quarter of the shorter UDP timeout, within these bounds: an exchange
// ends at most a quarter of its timeout late.
const (
	udpSweepMax = 5 * time.Second
	udpSweepMin = 10 * time.Millisecond
)

// Refusals (530) are answered at most udpRefusalRate times a second: a VERSION's source may
// be spoofed, and the gateway must not reflect floods. The rest get no answer (the client
// retransmits) and are counted.
const (
	udpRefusalRate  = 100
	udpRefusalBurst = 100
)

// udpRefusal is why a VERSION that would open an exchange was answered 530.
type udpRefusal uint8

const (
	notRefused udpRefusal = iota
	refusedHandshakes
	refusedSource
)

func (r udpRefusal) drop() string {
	switch r {
	case refusedHandshakes:
		return "tsp_udp_handshake_limit"
	case refusedSource:
		return "tsp_source_limit"
	}
	return ""
}

// reason is the refusal's log reason, as on TCP.
func (r udpRefusal) reason() string {
	switch r {
	case refusedHandshakes:
		return "too many concurrent handshakes"
	case refusedSource:
		return "too many sessions from this source address"
	}
	return ""
}

type udpDatagram struct {
	b    []byte // the whole datagram, header included
	h    tsp.Header
	from netip.AddrPort
}

func (d udpDatagram) payload() []byte { return d.b[tsp.HeaderLen:] }

// udpServer serves TSP over UDP ("reliable UDP", tsp-wire-notes §2.3): sessions keyed by the
// client's address and port, one reply per datagram, retransmissions answered alike.
//
// Only a VERSION opens an exchange, which holds a handshake slot until it is established or
// tsp.handshake_timeout has passed, so exchanges that never establish are bounded whatever
// the sources claim to be. The slots are UDP's own: a VERSION needs no answer to hold one, so
// spoofed datagrams could otherwise lock TSP-SSL and enrollment out of the TCP port's slots.
type udpServer struct {
	srv     *Server
	write   func(b []byte, to netip.AddrPort) error
	queue   chan udpDatagram
	slots   *limit.Semaphore
	replies *limit.TokenBucket // answers to refused VERSIONs
	logs    *sampledLog        // refusals, and unauthenticated exchanges that end

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpSession
	// retired are refused exchanges replaced by a new VERSION from the same address and port;
	// they keep their slot until the sweep, so that restarting does not free it sooner.
	retired []*udpSession
}

type udpSession struct {
	mu       sync.Mutex
	ds       *tsp.DatagramSession
	s        *session
	start    time.Time // the VERSION that opened the exchange
	last     time.Time // last datagram answered
	closedAt time.Time
	release  func() // frees the handshake slot; nil once freed
	closed   bool   // machine closed: only retransmissions are answered
	done     bool   // tunnel established and counted
	expired  bool   // ended before it was established: every datagram is dropped
}

func newUDPServer(srv *Server) *udpServer {
	return &udpServer{
		srv: srv, write: srv.cfg.WriteUDP, queue: make(chan udpDatagram, udpQueueLen),
		slots:    limit.NewSemaphore(srv.gw.TSP.MaxHandshakes),
		replies:  limit.NewTokenBucket(udpRefusalRate, udpRefusalBurst, srv.now),
		logs:     newSampledLog(srv.log, srv.now),
		sessions: map[netip.AddrPort]*udpSession{},
	}
}

// HandleDatagram implements udpmux.Handler: it queues a copy of a well-formed datagram.
func (u *udpServer) HandleDatagram(b []byte, from netip.AddrPort) {
	h, _, err := tsp.ParseDatagram(b)
	if err != nil {
		u.srv.countDrop("tsp_udp_bad_datagram")
		return
	}
	select {
	case u.queue <- udpDatagram{b: append([]byte(nil), b...), h: h, from: from}:
	default:
		u.srv.countDrop("tsp_udp_queue_full")
	}
}

// ServeUDP steps the exchanges of the datagrams given to UDP's handler until ctx ends.
func (s *Server) ServeUDP(ctx context.Context) { s.udp.run(ctx) }

// UDP is the TSP handler of the UDP port's demultiplexer.
func (s *Server) UDP() interface{ HandleDatagram([]byte, netip.AddrPort) } { return s.udp }

func (u *udpServer) run(ctx context.Context) {
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
	t := time.NewTicker(u.sweepEvery())
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

func (u *udpServer) sweepEvery() time.Duration {
	d := min(udpSweepMax, u.srv.gw.TSP.HandshakeTimeout.D()/4, u.srv.gw.TSP.UDPIdleTimeout.D()/4)
	return max(d, udpSweepMin)
}

func (u *udpServer) handle(ctx context.Context, d udpDatagram) {
	h, payload := d.h, d.payload() // parsed by HandleDatagram
	u.mu.Lock()
	us := u.sessions[d.from]
	u.mu.Unlock()
	if us != nil {
		us.mu.Lock()
		if !restarted(us, h, payload) {
			u.step(ctx, us, d)
			us.mu.Unlock()
			return
		}
		us.mu.Unlock()
		u.forget(d.from, us)
	}
	if !isVersion(payload) { // only a VERSION opens an exchange
		u.srv.countDrop("tsp_udp_no_session")
		return
	}
	us, refused := u.open(d.from)
	if us == nil {
		u.refuse(d.from, h, refused)
		return
	}
	us.mu.Lock()
	u.step(ctx, us, d)
	us.mu.Unlock()
}

// step runs one datagram through the exchange's machine and answers it; us.mu is held.
func (u *udpServer) step(ctx context.Context, us *udpSession, d udpDatagram) {
	if us.expired {
		u.srv.countDrop("tsp_udp_expired")
		return
	}
	reply, err := us.ds.Handle(ctx, d.b)
	if reply != nil {
		us.last = u.srv.now()
		// Sent after the bookkeeping below: a client that has the answer to its accept may
		// open its next exchange at once, and must find this one's handshake slot free.
		defer func() {
			if werr := u.write(reply, d.from); werr != nil {
				us.s.log.Debug().Err(werr).Msg("UDP reply failed")
			}
		}()
	}
	switch {
	case errors.Is(err, tsp.ErrStale), errors.Is(err, tsp.ErrMalformed) && reply == nil:
		u.srv.countDrop("tsp_udp_bad_datagram")
		return
	case reply == nil && errors.Is(err, tsp.ErrClosed):
		u.srv.countDrop("tsp_udp_closed") // a new message after the machine closed
		return
	case err != nil && !us.closed:
		u.close(us)
		if _, authenticated := us.ds.Server().Identity(); authenticated || us.done {
			u.srv.sessionFailed(us.s, tsp.TransportUDP, us.start, err, us.done, true)
		} else { // anyone can get here from any source address: rate-limited
			code := u.srv.countFailure(tsp.TransportUDP, us.start, err, false)
			u.logs.info("unauthenticated", func(e *zerolog.Event) {
				e.Str("session", us.s.id).Str("remote", us.s.remote.String()).Str("control", "udp").
					Int("tsp_status", code).Err(err).Msg("TSP request refused")
			})
		}
		u.srv.end(us.s, lease.ReasonClosed)
		return
	}
	if _, _, ok := us.ds.Server().Established(); ok && !us.done {
		us.done = true
		us.freeSlot()
		u.srv.cfg.Metrics.ObserveHandshake(metrics.TransportTSPUDP, metrics.ResultOK, u.srv.now().Sub(us.start))
		u.srv.cfg.Metrics.TSPStatus(tsp.StatusSuccess)
	}
	if us.ds.Server().State() == tsp.StateClosed && !us.closed {
		u.close(us)
		u.srv.end(us.s, lease.ReasonClosed)
	}
}

// close marks the machine closed; us.mu is held. An exchange never established keeps its
// slot until the sweep, so that refused exchanges cannot pile up faster than slots allow.
func (u *udpServer) close(us *udpSession) {
	us.closed, us.closedAt = true, u.srv.now()
}

// freeSlot releases the exchange's handshake slot, once; us.mu is held.
func (us *udpSession) freeSlot() {
	if us.release != nil {
		us.release()
		us.release = nil
	}
}

// restarted reports whether a datagram is a VERSION at a sequence other than the last
// answered one, a new exchange from the same address and port (a client reconnecting, a NAT
// reusing the port); retransmissions keep the sequence. us.mu is held.
func restarted(us *udpSession, h tsp.Header, payload []byte) bool {
	return us.ds.Answered() && h.Seq != us.ds.LastSeq() && isVersion(payload)
}

// isVersion reports whether a payload is a VERSION, the only message that opens an exchange.
func isVersion(payload []byte) bool {
	_, err := tsp.ParseVersion(payload)
	return err == nil
}

// forget drops the control state of one client address and port. An established tunnel keeps
// its lease and data plane (it ends with its lease), anything else ends now.
func (u *udpServer) forget(from netip.AddrPort, us *udpSession) {
	u.mu.Lock()
	if u.sessions[from] == us {
		delete(u.sessions, from)
	}
	u.mu.Unlock()
	us.mu.Lock()
	done, closed := us.done, us.closed
	if !done {
		us.expired = true // a worker still holding us must not step it
	}
	if !done && closed && us.release != nil {
		us.mu.Unlock()
		u.mu.Lock()
		u.retired = append(u.retired, us) // refused: the sweep frees its slot
		u.mu.Unlock()
	} else {
		us.freeSlot()
		us.mu.Unlock()
	}
	if !done && !closed {
		u.srv.end(us.s, lease.ReasonClosed)
	}
}

// open finds or creates the exchange of a client address and port for a VERSION datagram. It
// returns nil and why when the handshake slots or the source's sessions are used up.
func (u *udpServer) open(from netip.AddrPort) (*udpSession, udpRefusal) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if us := u.sessions[from]; us != nil {
		return us, notRefused // a copy of the same VERSION got here first
	}
	release, ok := u.slots.TryAcquire()
	if !ok {
		return nil, refusedHandshakes
	}
	s := u.srv.newSession("udp", from, "", nil)
	if !u.srv.sessions.add(s, u.srv.gw.TSP.MaxSessionsPerSource) {
		release()
		return nil, refusedSource
	}
	m, _, err := u.srv.newMachine(s, tsp.TransportUDP, auth.Identity{})
	if err == nil {
		var ds *tsp.DatagramSession
		if ds, err = tsp.NewDatagramSession(m); err == nil {
			now := u.srv.now()
			us := &udpSession{ds: ds, s: s, start: now, last: now, release: release}
			u.sessions[from] = us
			return us, notRefused
		}
	}
	s.log.Error().Err(err).Msg("cannot start TSP session")
	release()
	u.srv.sessions.remove(s)
	return nil, notRefused // no answer: the client retransmits
}

// refuse answers 530 (21 bytes of payload for the VERSION's 13 or more) within
// udpRefusalRate, and counts and logs the refusal.
func (u *udpServer) refuse(from netip.AddrPort, h tsp.Header, r udpRefusal) {
	if r == notRefused {
		return
	}
	u.srv.countDrop(r.drop())
	u.srv.cfg.Metrics.TSPStatus(tsp.StatusServerTooBusy)
	if r == refusedHandshakes {
		u.srv.cfg.Metrics.ObserveHandshake(metrics.TransportTSPUDP, metrics.ResultRefused, 0)
	}
	u.logs.warn("refused", func(e *zerolog.Event) {
		e.Str("remote", from.String()).Str("control", "udp").Str("reason", r.reason()).
			Int("tsp_status", tsp.StatusServerTooBusy).Msg("TSP session refused")
	})
	if !u.replies.Allow() {
		u.srv.countDrop("tsp_udp_refusal_unanswered")
		return
	}
	_ = u.write(tsp.AppendDatagram(nil, h, tsp.NewStatus(tsp.StatusServerTooBusy).Marshal()), from)
}

// sweep ends exchanges not established handshake_timeout after their VERSION and forgets
// idle control state. An established session keeps its lease and data plane (gogoc never
// speaks again after accept); they end with the lease.
func (u *udpServer) sweep() {
	now := u.srv.now()
	handshake := u.srv.gw.TSP.HandshakeTimeout.D()
	idle := u.srv.gw.TSP.UDPIdleTimeout.D()
	var timedOut []*udpSession
	u.mu.Lock()
	for k, us := range u.sessions {
		if !us.mu.TryLock() {
			continue // a worker is stepping it (a lease commit, say): the next sweep will see it
		}
		switch {
		case !us.done && !us.expired && now.Sub(us.start) >= handshake:
			us.freeSlot()
			if us.closed { // refused: its retransmissions need no answer any more
				delete(u.sessions, k)
				break
			}
			us.expired = true
			u.close(us)
			timedOut = append(timedOut, us)
		case us.closed || us.expired:
			if now.Sub(us.closedAt) > udpLinger {
				us.freeSlot() // a refused exchange when udpLinger < handshake_timeout
				delete(u.sessions, k)
			}
		case us.done && now.Sub(us.last) > idle:
			delete(u.sessions, k)
		}
		us.mu.Unlock()
	}
	u.retired = slices.DeleteFunc(u.retired, func(us *udpSession) bool {
		us.mu.Lock()
		defer us.mu.Unlock()
		if now.Sub(us.start) >= handshake || now.Sub(us.closedAt) > udpLinger {
			us.freeSlot()
			return true
		}
		return false
	})
	u.mu.Unlock()
	for _, us := range timedOut {
		u.timedOut(us, handshake)
	}
}

// timedOut ends an exchange not established within handshake_timeout. Unauthenticated ones
// are logged rate-limited: anyone can open them, from any source address.
func (u *udpServer) timedOut(us *udpSession, handshake time.Duration) {
	us.mu.Lock()
	id, authenticated := us.ds.Server().Identity()
	us.mu.Unlock()
	if _, _, ended := us.s.state(); ended { // kicked or revoked meanwhile: logged there
		return
	}
	u.srv.cfg.Metrics.ObserveHandshake(metrics.TransportTSPUDP, metrics.ResultTimeout, handshake)
	const reason = "handshake timeout" // as on TCP
	if authenticated {
		us.s.log.Info().Str("reason", reason).Str("identity", id.Name).Str("mechanism", string(id.Mechanism)).
			Msg("TSP session ended")
	} else {
		u.logs.info("unauthenticated", func(e *zerolog.Event) {
			e.Str("session", us.s.id).Str("remote", us.s.remote.String()).Str("control", "udp").
				Str("reason", reason).Msg("TSP session ended")
		})
	}
	u.srv.end(us.s, lease.ReasonClosed)
}
