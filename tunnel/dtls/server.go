package dtls

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dstmgw/dstm/internal/limit"
	"github.com/dstmgw/dstm/tsp"
	"github.com/dstmgw/dstm/tunnel"
	"github.com/dstmgw/dstm/tunnel/record"
	"github.com/dstmgw/dstm/tunnel/udpmux"
	piondtls "github.com/pion/dtls/v3"
	"github.com/rs/zerolog"
)

// Defaults applied by NewServer for zero ServerConfig fields.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxHandshakes    = 256
	DefaultMaxSessions      = 65536
	DefaultIdleTimeout      = 2 * time.Minute
	DefaultQueueLen         = 1024
	DefaultHelloVerifyRate  = 5000
)

// BindFunc attaches an authenticated DTLS link to the TSP session that
// issued token. It checks that the certificate's identity is the session's
// identity and returns the receiver for the session's inbound packets. An
// error refuses the link. BindFunc must not retain the token slice.
type BindFunc func(ctx context.Context, token []byte, peerCert *x509.Certificate,
	remote netip.AddrPort, link tunnel.Link) (tunnel.Receiver, error)

// ServerConfig configures a Server.
type ServerConfig struct {
	// GetCertificate returns the server certificate, with crypto/tls's
	// signature so that one rotator serves TLS and DTLS; Certificates is
	// used when it is nil.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Certificates   []tls.Certificate
	// ClientCAs verifies client certificate chains. When nil,
	// VerifyPeerCertificate must verify the chain itself.
	ClientCAs             *x509.CertPool
	VerifyPeerCertificate func(rawCerts [][]byte, verifiedChains [][]*x509.Certificate) error
	Bind                  BindFunc                                // required
	Write                 func(b []byte, to netip.AddrPort) error // sends on the shared port; required
	// WriteBatch sends datagrams to one address on the shared port, several per system call
	// (udpmux.Mux.WriteBatch); nil: Write for each.
	WriteBatch func(bufs [][]byte, to netip.AddrPort) error
	// HandshakeTimeout bounds the handshake and, separately, the wait for
	// the token and the Bind call.
	HandshakeTimeout time.Duration
	MaxHandshakes    int // concurrent handshakes
	MaxSessions      int // peers, handshaking or established
	// MaxHandshakesPerAddr and MaxHandshakesPerNet bound the handshakes in progress from one
	// source address and from one IPv6 /64; zero: MaxHandshakes/16 (at least 2) and
	// MaxHandshakes/4 (at least 4).
	MaxHandshakesPerAddr int
	MaxHandshakesPerNet  int
	// HelloVerifyRate bounds the HelloVerifyRequests (and alerts) sent in answer to
	// ClientHellos from addresses with no peer, per second from all sources together; each
	// source (IPv6 /64, IPv4 address) also gets at most 100 a second. Zero:
	// DefaultHelloVerifyRate.
	HelloVerifyRate float64
	// IdleTimeout closes an established link that received nothing for
	// between one and two times this long.
	IdleTimeout time.Duration
	QueueLen    int // per-peer datagram queue
	// MTU is the path MTU pion fragments handshake flights to; zero keeps
	// pion's default (1200).
	MTU int
	// NoDataRecords keeps every link's packets in DTLS records: no data-record offer
	// (tunnel/record) is made.
	NoDataRecords bool
	// KeepDTLS keeps each link's pion Conn for the life of the link even when the client
	// accepted data records of version 2 (which end sessions by close records); by default
	// the server lets the DTLS state go then (docs/protocol.md).
	KeepDTLS bool
	Now      func() time.Time
	Logger   zerolog.Logger // session events and pion's logging, at debug level
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.MaxHandshakesPerAddr <= 0 {
		c.MaxHandshakesPerAddr = max(2, c.MaxHandshakes/16)
	}
	if c.MaxHandshakesPerNet <= 0 {
		c.MaxHandshakesPerNet = max(4, c.MaxHandshakes/4)
	}
	if c.HelloVerifyRate <= 0 {
		c.HelloVerifyRate = DefaultHelloVerifyRate
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.QueueLen <= 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c ServerConfig) validate() error {
	switch {
	case c.Bind == nil:
		return errors.New("dtls: ServerConfig.Bind is required")
	case c.Write == nil:
		return errors.New("dtls: ServerConfig.Write is required")
	case c.GetCertificate == nil && len(c.Certificates) == 0:
		return errors.New("dtls: ServerConfig needs GetCertificate or Certificates")
	case c.ClientCAs == nil && c.VerifyPeerCertificate == nil:
		return errors.New("dtls: ServerConfig needs ClientCAs or VerifyPeerCertificate")
	}
	return nil
}

// ServerStats is a snapshot of a Server's counters. A ClientHello from an address with no
// peer either starts a peer or is counted in one of HelloVerifies, DroppedHelloRate,
// DroppedBadHello, DroppedOldClient, DroppedSourceLimit, DroppedHandshakes and DroppedClosed;
// DroppedBadCookie also counts those that carried a cookie not valid here.
type ServerStats struct {
	Sessions          int    // peers now (handshaking or established), and links that let their DTLS state go
	Handshakes        int    // handshakes in progress
	HandshakesOK      uint64 // completed handshakes
	HandshakesFailed  uint64 // failed or timed-out handshakes
	BindsRefused      uint64 // no token, bad token, or Bind error
	Roams             uint64 // peer address changes followed
	DroppedUnknown    uint64 // not a ClientHello and no matching peer
	DroppedHandshakes uint64 // verified ClientHello over MaxHandshakes/MaxSessions
	DroppedQueueFull  uint64 // peer queue full (newest dropped)
	DroppedClosed     uint64 // arrived for a peer being closed
	DroppedMalformed  uint64 // decrypted records that are not IPv4
	DataLinks         int    // established links whose packets go in data records

	// Data records dropped: for no session here, forged (or for a session that has none),
	// replayed or behind the window, shorter than a header and a tag.
	DataDroppedUnknown, DataDroppedForged, DataDroppedReplayed, DataDroppedShort uint64

	HelloVerifies      uint64 // ClientHellos without a valid cookie, answered with a HelloVerifyRequest
	DroppedHelloRate   uint64 // ClientHellos left unanswered by the HelloVerifyRate limits
	DroppedBadHello    uint64 // ClientHellos that do not parse, or are fragmented
	DroppedBadCookie   uint64 // cookies forged, made for another address or port or ClientHello, or expired
	DroppedOldClient   uint64 // valid cookies at message_seq ≠ 0: a client without the gateway's cookie handling
	DroppedSourceLimit uint64 // verified ClientHellos over their address's or /64's share of handshakes
}

type serverCounters struct {
	handshakesOK, handshakesFailed, bindsRefused, roams atomic.Uint64
	droppedUnknown, droppedHandshakes, droppedQueueFull atomic.Uint64
	droppedClosed, droppedMalformed                     atomic.Uint64
	dataDroppedUnknown                                  atomic.Uint64
	dataDrops                                           dataDrops

	helloVerifies, droppedHelloRate, droppedBadHello     atomic.Uint64
	droppedBadCookie, droppedOldClient, droppedSourceLim atomic.Uint64
}

// Server is the v4dtlsv6 transport's server side on the shared UDP port. It
// implements udpmux.Handler.
type Server struct {
	cfg       ServerConfig
	opts      []piondtls.ServerOption
	stats     serverCounters
	pool      sync.Pool // *dgram
	wg        sync.WaitGroup
	cookies   *cookies
	scratch   sync.Pool // *helloScratch
	replies   *replyLimits
	perSource *limit.PerSource // handshakes in progress per source address and /64
	suite     record.Suite     // of the data records offered

	// Links with data-record packets waiting for EndBatch: dirty is appended to under
	// dirtyMu; EndBatch takes it under flushMu, which also keeps a reader's EndBatch from
	// returning while another reader delivers packets of its batch.
	flushMu      sync.Mutex
	dirtyMu      sync.Mutex
	dirty, spare []*link

	sealBatches sync.Pool // *sealBatch

	mu         sync.RWMutex
	byAddr     map[netip.AddrPort]*peer
	byCID      map[[CIDLen]byte]*peer
	byData     map[uint32]*ServerLink // by data-record session id
	peers      map[*peer]struct{}
	handshakes int
	// detachedLinks are the links in byData that live without their DTLS state (no peer).
	detachedLinks int
	closed        bool
}

var _ udpmux.Handler = (*Server)(nil)

// NewServer validates cfg and returns a Server. Feed it datagrams with
// HandleDatagram; Close it to end every session.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:    cfg,
		opts:   serverOptions(cfg),
		byAddr: make(map[netip.AddrPort]*peer),
		byCID:  make(map[[CIDLen]byte]*peer),
		byData: make(map[uint32]*ServerLink),
		suite:  preferredSuite(),
		peers:  make(map[*peer]struct{}),

		cookies:   newCookies(cfg.Now, cookieRotation),
		replies:   newReplyLimits(cfg),
		perSource: limit.NewPerSource(cfg.MaxHandshakesPerAddr, cfg.MaxHandshakesPerNet),
	}
	s.pool.New = func() any { return &dgram{buf: make([]byte, 0, poolBufSize)} }
	s.scratch.New = func() any { return new(helloScratch) }
	return s, nil
}

func serverOptions(cfg ServerConfig) []piondtls.ServerOption {
	auth := piondtls.RequireAndVerifyClientCert
	if cfg.ClientCAs == nil {
		auth = piondtls.RequireAnyClientCert
	}
	opts := []piondtls.ServerOption{
		piondtls.WithClientAuth(auth),
		piondtls.WithExtendedMasterSecret(piondtls.RequireExtendedMasterSecret),
		piondtls.WithCipherSuites(cipherSuites...),
		piondtls.WithLoggerFactory(pionLoggerFactory{log: cfg.Logger}),
		// The Server has verified the cookie before a peer exists (handleHello), so pion
		// does no exchange of its own: it sees the ClientHello as the client's pion wrote it,
		// at message_seq 0, which the client's pion takes as a server that skipped the
		// HelloVerifyRequest (see helloConn).
		piondtls.WithInsecureSkipVerifyHello(true),
	}
	if cfg.ClientCAs != nil {
		opts = append(opts, piondtls.WithClientCAs(cfg.ClientCAs))
	}
	if cfg.VerifyPeerCertificate != nil {
		opts = append(opts, piondtls.WithVerifyPeerCertificate(cfg.VerifyPeerCertificate))
	}
	if cfg.GetCertificate != nil {
		opts = append(opts, piondtls.WithGetCertificate(adaptGetCertificate(cfg.GetCertificate)))
	} else {
		opts = append(opts, piondtls.WithCertificates(cfg.Certificates...))
	}
	if cfg.MTU > 0 {
		opts = append(opts, piondtls.WithMTU(cfg.MTU))
	}
	return opts
}

// cipherSuites are the AEAD suites offered and accepted (certificates from
// the embedded CA are ECDSA; RSA is accepted for imported ones).
var cipherSuites = []piondtls.CipherSuiteID{
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	piondtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	piondtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

func adaptGetCertificate(f func(*tls.ClientHelloInfo) (*tls.Certificate, error)) func(*piondtls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hi *piondtls.ClientHelloInfo) (*tls.Certificate, error) {
		suites := make([]uint16, len(hi.CipherSuites))
		for i, s := range hi.CipherSuites {
			suites[i] = uint16(s)
		}
		return f(&tls.ClientHelloInfo{ServerName: hi.ServerName, CipherSuites: suites})
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() ServerStats {
	s.mu.RLock()
	n, hs := len(s.peers)+s.detachedLinks, s.handshakes
	dataLinks := 0
	for _, l := range s.byData {
		if l.data.send.Load() {
			dataLinks++
		}
	}
	s.mu.RUnlock()
	c := &s.stats
	return ServerStats{
		Sessions: n, Handshakes: hs,
		HandshakesOK: c.handshakesOK.Load(), HandshakesFailed: c.handshakesFailed.Load(),
		BindsRefused: c.bindsRefused.Load(), Roams: c.roams.Load(),
		DroppedUnknown: c.droppedUnknown.Load(), DroppedHandshakes: c.droppedHandshakes.Load(),
		DroppedQueueFull: c.droppedQueueFull.Load(), DroppedClosed: c.droppedClosed.Load(),
		DroppedMalformed: c.droppedMalformed.Load(), DataLinks: dataLinks,
		DataDroppedUnknown: c.dataDroppedUnknown.Load(), DataDroppedForged: c.dataDrops[dropForged].Load(),
		DataDroppedReplayed: c.dataDrops[dropReplayed].Load(), DataDroppedShort: c.dataDrops[dropShort].Load(),

		HelloVerifies: c.helloVerifies.Load(), DroppedHelloRate: c.droppedHelloRate.Load(),
		DroppedBadHello: c.droppedBadHello.Load(), DroppedBadCookie: c.droppedBadCookie.Load(),
		DroppedOldClient: c.droppedOldClient.Load(), DroppedSourceLimit: c.droppedSourceLim.Load(),
	}
}

// HandleDatagram implements udpmux.Handler. It never blocks. Data records
// are opened in place, and their packets delivered, on the caller's
// goroutine.
func (s *Server) HandleDatagram(b []byte, from netip.AddrPort) {
	s.handle(b, from, false)
}

// HandleBatchDatagram implements udpmux.BatchHandler: HandleDatagram, but
// the packets of data records wait in their link, in b, for EndBatch, so
// that a link gets the packets of one read at once.
func (s *Server) HandleBatchDatagram(b []byte, from netip.AddrPort) {
	s.handle(b, from, true)
}

// EndBatch implements udpmux.BatchHandler: it delivers every packet waiting
// in a link. It returns when they are delivered, those of other readers'
// batches included.
func (s *Server) EndBatch() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.dirtyMu.Lock()
	dirty := s.dirty
	s.dirty = s.spare[:0]
	s.dirtyMu.Unlock()
	for i, l := range dirty {
		l.flushPending()
		dirty[i] = nil
	}
	s.spare = dirty[:0]
}

// writeBatch sends data records with cfg.WriteBatch, or cfg.Write.
func (s *Server) writeBatch(bufs [][]byte, to netip.AddrPort) error {
	if s.cfg.WriteBatch != nil {
		return s.cfg.WriteBatch(bufs, to)
	}
	for _, b := range bufs {
		if err := s.cfg.Write(b, to); err != nil {
			return err
		}
	}
	return nil
}

// markDirty lists a link that has packets waiting for EndBatch.
func (s *Server) markDirty(l *link) {
	s.dirtyMu.Lock()
	s.dirty = append(s.dirty, l)
	s.dirtyMu.Unlock()
}

func (s *Server) handle(b []byte, from netip.AddrPort, inBatch bool) {
	if len(b) > 0 && b[0] == record.Type {
		s.handleData(b, from, inBatch)
		return
	}
	info := inspectDatagram(b)
	s.mu.RLock()
	p := s.lookupLocked(info, from)
	s.mu.RUnlock()
	switch {
	case p != nil && info.clientHello:
		p.deliverHello(b, from)
	case p != nil:
		p.deliver(b, from)
	case info.clientHello:
		s.handleHello(b, from)
	default:
		s.stats.droppedUnknown.Add(1)
	}
}

func (s *Server) handleData(b []byte, from netip.AddrPort, inBatch bool) {
	sid, ok := record.Session(b)
	if !ok {
		s.stats.dataDrops[dropShort].Add(1)
		return
	}
	if len(b) > maxRecord+record.Overhead { // no packet is that long: not worth a decryption
		s.stats.dataDrops[dropForged].Add(1)
		return
	}
	s.mu.RLock()
	l := s.byData[sid]
	s.mu.RUnlock()
	if l == nil {
		s.stats.dataDroppedUnknown.Add(1)
		return
	}
	l.receiveData(b, from, inBatch)
}

// registerData gives l a data-record session id no other link has.
func (s *Server) registerData(l *ServerLink) (uint32, error) {
	var b [4]byte
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 16 {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		sid := binary.BigEndian.Uint32(b[:])
		if _, taken := s.byData[sid]; !taken {
			s.byData[sid] = l
			return sid, nil
		}
	}
	return 0, errors.New("dtls: no free data-record session id")
}

func (s *Server) unregisterData(sid uint32, l *ServerLink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byData[sid] == l {
		delete(s.byData, sid)
	}
}

// lookupLocked finds the peer for a datagram. A ClientHello from the
// address of an established peer that uses a CID starts a new connection
// (the client restarted); that peer stays reachable through its CID.
func (s *Server) lookupLocked(info datagramInfo, from netip.AddrPort) *peer {
	if info.hasCID {
		if p := s.byCID[info.cid]; p != nil {
			return p
		}
	}
	p := s.byAddr[from]
	if p != nil && info.clientHello && p.established && len(p.cids) > 0 {
		return nil
	}
	return p
}

// admit creates a peer for a verified ClientHello from a new address, within the
// handshake and session bounds and the source's share of handshakes.
func (s *Server) admit(from netip.AddrPort) *peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.stats.droppedClosed.Add(1)
		return nil
	}
	if p := s.byAddr[from]; p != nil && !(p.established && len(p.cids) > 0) {
		return p
	}
	if s.handshakes >= s.cfg.MaxHandshakes || len(s.peers)+s.detachedLinks >= s.cfg.MaxSessions {
		s.stats.droppedHandshakes.Add(1)
		return nil
	}
	if !s.perSource.Acquire(from.Addr()) {
		s.stats.droppedSourceLim.Add(1)
		return nil
	}
	p := newPeer(s, from)
	s.byAddr[from] = p
	s.peers[p] = struct{}{}
	s.handshakes++
	s.wg.Add(1)
	go s.routinePeer(p, from)
	return p
}

func (s *Server) registerCID(p *peer, cid [CIDLen]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.byCID[cid]; taken {
		return false
	}
	s.byCID[cid] = p
	p.cids = append(p.cids, cid)
	return true
}

// moveAddr re-keys a peer whose address changed. An address another peer
// holds is left to that peer: this one is reached by its CID anyway.
func (s *Server) moveAddr(p *peer, to netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, live := s.peers[p]; !live || p.remote == to {
		return
	}
	if s.byAddr[p.remote] == p {
		delete(s.byAddr, p.remote)
	}
	if _, taken := s.byAddr[to]; !taken {
		s.byAddr[to] = p
	}
	p.remote = to
	s.stats.roams.Add(1)
}

func (s *Server) removePeer(p *peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, live := s.peers[p]; !live {
		return
	}
	delete(s.peers, p)
	if s.byAddr[p.remote] == p {
		delete(s.byAddr, p.remote)
	}
	for _, cid := range p.cids {
		if s.byCID[cid] == p {
			delete(s.byCID, cid)
		}
	}
	if !p.established {
		s.handshakes--
		s.perSource.Release(p.source)
	}
}

func (s *Server) handshakeDone(p *peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, live := s.peers[p]; live && !p.established {
		p.established = true
		s.handshakes--
		s.perSource.Release(p.source)
	}
}

func (s *Server) getDgram(n int) *dgram {
	if n > poolBufSize {
		return &dgram{buf: make([]byte, 0, n)}
	}
	return s.pool.Get().(*dgram)
}

func (s *Server) putDgram(d *dgram) {
	if cap(d.buf) == poolBufSize {
		d.buf = d.buf[:0]
		s.pool.Put(d)
	}
}

// Close ends every session (established links get a close_notify) and
// waits for their goroutines. Later datagrams are dropped.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	peers := make([]*peer, 0, len(s.peers))
	for p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	for _, p := range peers {
		p.closeSession()
	}
	s.wg.Wait() // no link detaches after this
	s.mu.Lock()
	var detached []*ServerLink
	for _, l := range s.byData {
		if l.detached() {
			detached = append(detached, l)
		}
	}
	s.mu.Unlock()
	for _, l := range detached {
		_ = l.Close() // a close record to the client
	}
	s.wg.Wait()
	return nil
}

func (s *Server) routinePeer(p *peer, from netip.AddrPort) {
	defer s.wg.Done()
	defer p.Close()
	log := s.cfg.Logger.With().Str("transport", tunnel.DTLS).Stringer("remote", from).Logger()
	conn, err := s.handshake(p, from)
	if err != nil {
		s.stats.handshakesFailed.Add(1)
		log.Debug().Err(err).Msg("dtls handshake failed")
		return
	}
	s.stats.handshakesOK.Add(1)
	link, err := s.bind(conn, p, from)
	if err != nil {
		s.stats.bindsRefused.Add(1)
		log.Debug().Err(err).Msg("dtls link refused")
		_ = conn.Close()
		return
	}
	if !s.cfg.NoDataRecords {
		if err := s.offerData(link, p); err != nil {
			log.Debug().Err(err).Msg("dtls link without data records")
		}
	}
	log.Debug().Msg("dtls link bound")
	link.onDetach = func() { link.detachFrom(s, p) }
	link.run()
	link.onDetach = nil // it holds the peer, and through it pion's Conn
	if link.detached() {
		log.Debug().Msg("dtls link on data records alone")
		return
	}
	if dp := link.data.path.Load(); dp != nil {
		s.unregisterData(dp.session, link)
	}
	log.Debug().Err(link.Err()).Stringer("remote", link.Endpoint()).Msg("dtls link closed")
}

func (s *Server) handshake(p *peer, from netip.AddrPort) (*piondtls.Conn, error) {
	opts := append(slices.Clip(s.opts), piondtls.WithConnectionIDGenerator(p.generateCID))
	conn, err := piondtls.ServerWithOptions(p, net.UDPAddrFromAddrPort(from), opts...)
	if err != nil {
		return nil, fmt.Errorf("dtls: server conn: %w", err)
	}
	p.setConn(conn)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dtls: handshake: %w", err)
	}
	s.handshakeDone(p)
	return conn, nil
}

// bind reads the token, the first application record, and asks the
// gateway to bind the link to the token's TSP session.
func (s *Server) bind(conn *piondtls.Conn, p *peer, from netip.AddrPort) (*ServerLink, error) {
	cert, err := peerCertificate(conn)
	if err != nil {
		return nil, err
	}
	token, err := readToken(conn, s.cfg.Now().Add(s.cfg.HandshakeTimeout))
	if err != nil {
		return nil, err
	}
	link := newServerLink(conn, token, s)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
	defer cancel()
	recv, err := s.cfg.Bind(ctx, token, cert, link.Endpoint(), link)
	if err == nil && recv == nil {
		err = errors.New("no receiver")
	}
	if err != nil {
		err = fmt.Errorf("dtls: bind: %w", err)
		link.finish(err) // the gateway may have seen the link: end it properly
		return nil, err
	}
	link.recv = recv
	_ = link.ack() // if lost, the client retransmits the token and the link answers
	return link, nil
}

// offerData gives link a data-record session id and offers data records to the client.
func (s *Server) offerData(link *ServerLink, p *peer) error {
	link.prepareData(s, p)
	sid, err := s.registerData(link)
	if err != nil {
		return err
	}
	if err := link.offerData(s, sid); err != nil {
		s.unregisterData(sid, link)
		return err
	}
	return nil
}

func peerCertificate(conn *piondtls.Conn) (*x509.Certificate, error) {
	state, ok := conn.ConnectionState()
	if !ok || len(state.PeerCertificates) == 0 {
		return nil, errors.New("dtls: no peer certificate")
	}
	cert, err := x509.ParseCertificate(state.PeerCertificates[0])
	if err != nil {
		return nil, fmt.Errorf("dtls: peer certificate: %w", err)
	}
	return cert, nil
}

func readToken(conn *piondtls.Conn, deadline time.Time) ([]byte, error) {
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("dtls: token: %w", err)
	}
	buf := make([]byte, maxRecord)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("dtls: token: %w", err)
	}
	if n != tsp.TokenLen {
		return nil, fmt.Errorf("dtls: token: %d bytes, want %d", n, tsp.TokenLen)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("dtls: token: %w", err)
	}
	return bytes.Clone(buf[:n]), nil // not the 16 KB buffer, for the life of the session
}
