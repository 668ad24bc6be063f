package lease

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"
)

// State is the life-cycle state of one address.
type State uint8

// Lease states; see the package documentation for the transitions.
const (
	StateFree    State = iota // not bound to any session
	StateOffered              // proposed to a session, waiting for Accept
	StateActive               // bound to a session
	StateHeld                 // session gone, address kept for its identity
)

// String returns "free", "offered", "active" or "held".
func (s State) String() string {
	switch s {
	case StateFree:
		return "free"
	case StateOffered:
		return "offered"
	case StateActive:
		return "active"
	case StateHeld:
		return "held"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Lease is one IPv4 address and what it is bound to.
type Lease struct {
	Addr      netip.Addr
	Pool      string
	Identity  string
	Session   string     // opaque session id given by the caller
	Endpoint  netip.Addr // client's outer IPv6 endpoint (may be invalid/zero)
	Transport string     // "v4v6", "v4dtlsv6", "v4tlsv6" (opaque to this package)
	// Owner names the gateway whose session holds an offered or active lease
	// (Config.Owner; empty in single-node mode). A shared store ties the
	// record to that gateway's ownership; held records have no owner.
	Owner   string
	State   State
	Static  bool
	Granted time.Time // when the lease was offered, then when it became active
	Expires time.Time // offer deadline, lifetime end or hold end, by state
}

// Range is an inclusive range of IPv4 addresses.
type Range struct{ First, Last netip.Addr }

// PoolConfig describes one pool of IPv4 addresses.
type PoolConfig struct {
	Name     string
	Prefixes []netip.Prefix
	Ranges   []Range
	// Exclude lists addresses never handed out (the inner address, routers).
	Exclude []netip.Prefix
	// ExcludeNetworkBroadcast excludes each prefix's first and last address.
	ExcludeNetworkBroadcast bool
}

// Reservation binds an address to one identity: it is offered only to it.
type Reservation struct {
	Identity string
	Addr     netip.Addr
}

// LimitPolicy says what Offer does when an identity is at its session limit.
type LimitPolicy uint8

// Limit policies.
const (
	// ReplaceOldest releases the identity's oldest lease (EventReplaced).
	ReplaceOldest LimitPolicy = iota
	// Refuse makes Offer fail with ErrSessionLimit.
	Refuse
)

// String returns "replace-oldest" or "refuse".
func (p LimitPolicy) String() string {
	switch p {
	case ReplaceOldest:
		return "replace-oldest"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// Default durations used when the Config leaves them zero.
const (
	DefaultOfferTimeout = 30 * time.Second
	DefaultLifetime     = time.Hour
	DefaultHoldTime     = 24 * time.Hour
)

// Config configures a Manager.
type Config struct {
	Pools                            []PoolConfig
	Reservations                     []Reservation
	OfferTimeout, Lifetime, HoldTime time.Duration
	MaxSessions                      int // per identity, offered and active (default 1)
	OnLimit                          LimitPolicy
	Now                              func() time.Time
	// Owner names this gateway in a shared store (cluster mode). Offered and
	// active leases of other owners are theirs to expire and release.
	Owner string
}

func (c Config) withDefaults() Config {
	if c.OfferTimeout <= 0 {
		c.OfferTimeout = DefaultOfferTimeout
	}
	if c.Lifetime <= 0 {
		c.Lifetime = DefaultLifetime
	}
	if c.HoldTime <= 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 1
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Request asks for an address.
type Request struct {
	Identity string
	// Pool names the pool; "" means the pool of the identity's reservation,
	// else the first configured pool.
	Pool      string
	Session   string
	Endpoint  netip.Addr
	Transport string
	// MaxSessions overrides Config.MaxSessions when > 0.
	MaxSessions int
}

// Reason says why a lease ended.
type Reason string

// Common reasons.
const (
	ReasonClosed   Reason = "closed"
	ReasonRevoked  Reason = "revoked"
	ReasonReplaced Reason = "replaced"
	ReasonKicked   Reason = "kicked"
	ReasonExpired  Reason = "expired"
	ReasonNoAccept Reason = "offer not accepted in time"
	ReasonRestart  Reason = "restart" // the session was one of an earlier run
	// ReasonOwnership: the gateway's ownership in a shared store ended (its
	// etcd lease expired), and with it the lease of the session.
	ReasonOwnership Reason = "ownership lost"
	// ReasonRemote: another gateway changed the lease (a revocation or a
	// session limit enforced there).
	ReasonRemote Reason = "changed by another gateway"
)

// Errors returned by the Manager; test them with errors.Is.
var (
	ErrPoolExhausted   = errors.New("lease: pool exhausted")
	ErrUnknownPool     = errors.New("lease: unknown pool")
	ErrInvalidIdentity = errors.New("lease: invalid identity")
	ErrNotFound        = errors.New("lease: no such lease")
	ErrSessionMismatch = errors.New("lease: lease belongs to another session")
	ErrSessionLimit    = errors.New("lease: session limit reached")
	// ErrBadState refuses an operation the lease's state does not allow.
	ErrBadState = errors.New("lease: operation not allowed in this state")
	// ErrConflict is returned by a Store when a compare-and-swap failed.
	ErrConflict = errors.New("lease: store conflict")
	// ErrInvalidConfig is wrapped by New and AddPool for a bad Config.
	ErrInvalidConfig = errors.New("lease: invalid configuration")
	// ErrNotHeld: see AddPool.
	ErrNotHeld = errors.New("lease: sessions of an earlier run not held")
	// ErrStoreUnavailable is wrapped by a shared Store that cannot take a change now (etcd
	// unreachable, or this gateway's ownership not live): another gateway may.
	ErrStoreUnavailable = errors.New("lease: store unavailable")
)

// MaxIdentityLen is the longest identity accepted, in bytes.
const MaxIdentityLen = 255

// ValidIdentity reports whether id is acceptable as an identity: 1 to 255
// bytes of valid UTF-8 without control characters.
func ValidIdentity(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidIdentity)
	}
	if len(id) > MaxIdentityLen {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrInvalidIdentity, len(id), MaxIdentityLen)
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("%w: not UTF-8", ErrInvalidIdentity)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: control character %U", ErrInvalidIdentity, r)
		}
	}
	return nil
}
