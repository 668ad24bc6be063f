package tep

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/dstmgw/dstm/auth/acl"
	"github.com/dstmgw/dstm/internal/limit"
	"github.com/dstmgw/dstm/internal/packet"
)

// Defaults for Config fields left zero.
const (
	// DefaultMTU is the inner IPv4 MTU unless configured: gogoc's v4v6
	// template sets 1280, and the outer packet (1320 bytes plain, about 1370
	// with DTLS) fits any IPv6 path of 1400 bytes (docs/dataplane.md).
	DefaultMTU       = 1280
	DefaultQueueLen  = 1024
	DefaultICMPRate  = 100 // ICMP errors per second
	DefaultICMPBurst = 20

	minMTU = 576
	// tunOffset is the headroom in front of every packet handed to the TUN
	// device (at least the 10-byte virtio-net header).
	tunOffset     = 16
	writeBatch    = 64 // most packets per WritePackets or TUN Write
	maxReadErrors = 16 // consecutive TUN read errors that make Run fail
)

// Errors returned by the TEP.
var (
	ErrClosed     = errors.New("tep: closed")
	ErrLeaseInUse = errors.New("tep: lease already has a session")
	ErrNotInPool  = errors.New("tep: lease is not in a pool")
)

// Config configures a TEP. New checks only its own fields.
type Config struct {
	// Device is the inside TUN device; the TEP owns it from New on.
	Device tun.Device
	// InnerAddr is the gateway's IPv4 address on the TUN device (the
	// keepalive target) and the source of ICMP errors sent into the tunnel.
	InnerAddr netip.Addr
	Pools     []netip.Prefix // lease prefixes routed to the TUN device
	MTU       int            // the TUN device's MTU and the largest session MTU
	QueueLen  int            // per-session queue length
	ICMPRate  float64        // ICMP errors per second; none when negative
	ICMPBurst int            // token bucket depth for ICMP errors
	Logger    zerolog.Logger // debug events, and a sample of denied packets
	Now       func() time.Time
	// Access returns the compiled access rules of an identity, nil for none
	// (auth.Policy.AccessWith); nil means no access control for any session.
	// SetAccess replaces it.
	Access func(identity string, groups []string) *acl.Set
	// Conntrack bounds each ruled session's connection table.
	Conntrack acl.TrackConfig
}

func (c *Config) setDefaults() {
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.QueueLen == 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.ICMPRate == 0 {
		c.ICMPRate = DefaultICMPRate
	}
	if c.ICMPBurst == 0 {
		c.ICMPBurst = DefaultICMPBurst
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	switch {
	case c.Device == nil:
		return errors.New("tep: no TUN device")
	case !c.InnerAddr.Is4():
		return fmt.Errorf("tep: inner address %v is not IPv4", c.InnerAddr)
	case len(c.Pools) == 0:
		return errors.New("tep: no pools")
	case c.MTU < minMTU || c.MTU > 0xffff:
		return fmt.Errorf("tep: MTU %d outside %d..65535", c.MTU, minMTU)
	case c.QueueLen < 1:
		return fmt.Errorf("tep: queue length %d", c.QueueLen)
	}
	for _, p := range c.Pools {
		if !p.Addr().Is4() {
			return fmt.Errorf("tep: pool %v is not IPv4", p)
		}
	}
	return nil
}

// TEP is the tunnel end point. Its methods are safe for concurrent use.
type TEP struct {
	cfg     Config
	log     zerolog.Logger
	dev     tun.Device
	inner   [4]byte // cfg.InnerAddr
	reg     registry
	pools   atomic.Pointer[[]netip.Prefix] // replaced whole by AddPools
	icmp    *limit.TokenBucket
	drops   [numDropReasons]atomic.Uint64
	sent    atomic.Uint64 // ICMP errors generated
	deny    denyLog
	evicted atomic.Uint64 // connection-table evictions
	outs    sync.Pool     // *outBuf, cfg.MTU bytes
	rxs     sync.Pool     // *rxBatch
	// guarded by reg.mu
	retired [numTransports]Traffic
	access  func(identity string, groups []string) *acl.Set
	gen     uint32                       // generation of the access rules, bumped by SetAccess
	denied  map[string]*[2]atomic.Uint64 // by access block: denied packets per acl.Dir
	closed  bool
	once    sync.Once
	devErr  error
}

// New validates cfg and returns a TEP; call Run to start the inside reader.
func New(cfg Config) (*TEP, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &TEP{cfg: cfg, log: cfg.Logger, dev: cfg.Device, inner: cfg.InnerAddr.As4(), access: cfg.Access, gen: 1, denied: map[string]*[2]atomic.Uint64{}}
	pools := append([]netip.Prefix(nil), cfg.Pools...)
	t.pools.Store(&pools)
	if cfg.ICMPRate > 0 {
		t.icmp = limit.NewTokenBucket(cfg.ICMPRate, cfg.ICMPBurst, cfg.Now)
	}
	t.outs.New = func() any { return &outBuf{b: make([]byte, 0, max(cfg.MTU, packet.MaxICMPErrorLen))} }
	t.rxs.New = func() any { return newRxBatch() }
	return t, nil
}

// Run reads the TUN device until ctx is done, Close is called or the device
// fails, then closes the TEP. It returns nil unless the device failed.
func (t *TEP) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { t.Close() })
	defer stop()
	t.log.Debug().Msg("routineReadInside started")
	err := t.routineReadInside()
	t.log.Debug().Err(err).Msg("routineReadInside stopped")
	t.Close()
	return err
}

// Close stops every session's writer and closes the TUN device; it is
// idempotent. Links belong to their transports and are not closed, but Close
// waits for each writer's current WritePackets, so a link must not block
// forever.
func (t *TEP) Close() error {
	t.once.Do(func() {
		t.reg.mu.Lock()
		t.closed = true
		sessions := t.reg.allLocked()
		for _, s := range sessions {
			t.removeLocked(s)
		}
		t.reg.mu.Unlock()
		for _, s := range sessions {
			s.stopQueue()
		}
		t.devErr = t.dev.Close()
	})
	return t.devErr
}

func (t *TEP) isClosed() bool {
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	return t.closed
}

func (t *TEP) drop(r DropReason, n int) { t.drops[r].Add(uint64(n)) }

// AddPools adds lease prefixes (a pool added by a reload): addresses in them can carry
// sessions, and packets to them without a session get ICMP host unreachable.
func (t *TEP) AddPools(ps ...netip.Prefix) error {
	for _, p := range ps {
		if !p.Addr().Is4() {
			return fmt.Errorf("tep: pool %v is not IPv4", p)
		}
	}
	t.reg.mu.Lock()
	defer t.reg.mu.Unlock()
	next := append(append([]netip.Prefix(nil), *t.pools.Load()...), ps...)
	t.pools.Store(&next)
	return nil
}

func (t *TEP) inPool(a netip.Addr) bool {
	for _, p := range *t.pools.Load() {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Stats returns a snapshot of the counters, removed sessions' traffic
// included.
func (t *TEP) Stats() Stats {
	t.reg.mu.Lock()
	totals := t.retired
	sessions := t.reg.allLocked()
	for _, s := range sessions {
		totals[s.tr] = totals[s.tr].plus(s.trafficSinceSwitchLocked())
	}
	t.reg.mu.Unlock()
	st := Stats{
		Sessions:   len(sessions),
		Transports: make(map[string]Traffic, numTransports),
		Drops:      make(map[string]uint64, numDropReasons),
		ICMPSent:   t.sent.Load(),
	}
	for i, tr := range totals {
		st.Transports[transportNames[i]] = tr
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		st.Drops[r.String()] = t.drops[r].Load()
	}
	st.Denied = t.deniedCounts()
	st.ConntrackEvictions = t.evicted.Load()
	return st
}
