package admin

import (
	"context"
	"time"
)

// Backend is what the admin API needs from the gateway; its methods are
// called concurrently. Errors wrapping [ErrNotFound], [ErrInvalid] or
// [ErrUnavailable] reach the client as that class (HTTP 404, 400, 503), any
// other as an internal error (500); the text is shown to the operator as is.
type Backend interface {
	// Leases lists every lease that is not free.
	Leases(ctx context.Context) ([]Lease, error)
	// Sessions lists the live sessions.
	Sessions(ctx context.Context) ([]Session, error)
	// Kick closes one session; its lease becomes held. ErrNotFound if no
	// session has that ID.
	Kick(ctx context.Context, session string) error
	// Revoke revokes the certificates of an identity, or one certificate by
	// serial, and closes the affected sessions. ErrNotFound if target
	// matches nothing.
	Revoke(ctx context.Context, target string) (RevokeResult, error)
	// Token issues a one-time enrollment token for identity. ttl 0 means
	// the configured default.
	Token(ctx context.Context, identity string, ttl time.Duration) (TokenResult, error)
	// Status describes the running gateway.
	Status(ctx context.Context) (Status, error)
}

// Lease is one IPv4 lease as the admin API shows it.
type Lease struct {
	Addr      string    `json:"addr"`                // leased IPv4 address
	Pool      string    `json:"pool"`                // pool name
	Identity  string    `json:"identity,omitempty"`  // owner identity
	State     string    `json:"state"`               // offered, active, held…
	Transport string    `json:"transport,omitempty"` // data transport of the bound session
	Session   string    `json:"session,omitempty"`   // bound session ID, if active
	Endpoint  string    `json:"endpoint,omitempty"`  // client's outer IPv6 endpoint
	Expires   time.Time `json:"expires,omitzero"`    // end of the offer, lifetime or hold time
	Static    bool      `json:"static,omitempty"`    // static reservation of Identity
	Gateway   string    `json:"gateway,omitempty"`   // cluster mode: the gateway whose session holds it
}

// Session is one live client session.
type Session struct {
	ID         string    `json:"id"`
	Identity   string    `json:"identity"`
	Lease      string    `json:"lease,omitempty"`     // leased IPv4 address
	Transport  string    `json:"transport,omitempty"` // data transport (v4v6, v4dtlsv6, v4tlsv6)
	Endpoint   string    `json:"endpoint,omitempty"`  // client's outer IPv6 endpoint
	Mechanism  string    `json:"mechanism,omitempty"` // SASL mechanism used to authenticate
	Serial     string    `json:"serial,omitempty"`    // client certificate serial (EXTERNAL)
	Since      time.Time `json:"since,omitzero"`      // session start
	PacketsIn  uint64    `json:"packets_in"`          // from the client
	PacketsOut uint64    `json:"packets_out"`         // to the client
	BytesIn    uint64    `json:"bytes_in"`
	BytesOut   uint64    `json:"bytes_out"`
	// TEP is the TEP node carrying the session's data (control nodes without a TEP).
	TEP string `json:"tep,omitempty"`
}

// RevokeResult tells what a revocation did.
type RevokeResult struct {
	Serials  []string `json:"serials"`  // certificate serials revoked
	Sessions int      `json:"sessions"` // live sessions closed
}

// TokenResult is a freshly issued enrollment token.
type TokenResult struct {
	Token       string    `json:"token"`
	Identity    string    `json:"identity"`
	Fingerprint string    `json:"fingerprint"` // SHA-256 fingerprint of the root CA, for pinning
	Expires     time.Time `json:"expires"`
}

// Status describes the running gateway.
type Status struct {
	Version  string       `json:"version"`
	Started  time.Time    `json:"started"`
	Listen   []string     `json:"listen"`   // listening addresses, e.g. "tcp [::]:3653"
	Sessions int          `json:"sessions"` // live sessions
	Pools    []PoolStatus `json:"pools"`
	Cluster  *Cluster     `json:"cluster,omitempty"` // cluster mode only
	BGP      *BGP         `json:"bgp,omitempty"`     // with bgp: only
	Roles    []string     `json:"roles,omitempty"`   // this node's roles: control, tep
	// TEPs are the live TEP nodes, as a control node without a TEP sees them.
	TEPs []TEP `json:"teps,omitempty"`
}

// TEP is a TEP node as a control node sees it.
type TEP struct {
	Name     string `json:"name"`
	IPv6     string `json:"ipv6"`
	InnerV4  string `json:"inner_v4"`
	DTLSPort uint16 `json:"dtls_port,omitempty"`
	Plain    bool   `json:"plain,omitempty"`
	Sessions int    `json:"sessions"` // bound to it, by every control node
}

// BGP is the route announcer's state.
type BGP struct {
	Announce  string        `json:"announce"`  // pools or leases
	Announced int           `json:"announced"` // prefixes announced now
	Neighbors []BGPNeighbor `json:"neighbors"`
	LastError string        `json:"last_error,omitempty"`
}

// BGPNeighbor is one BGP session.
type BGPNeighbor struct {
	Address string    `json:"address"`
	AS      uint32    `json:"as"`
	State   string    `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Since   time.Time `json:"since,omitzero"`
	// Received counts the routes the neighbour sent; Kept those of them in the gateway's RIB
	// (always 0: the gateway only announces).
	Received uint64 `json:"received"`
	Kept     uint64 `json:"kept"`
}

// Cluster is this gateway's view of its cluster (store.etcd).
type Cluster struct {
	Node      string   `json:"node"`      // this gateway's name
	Endpoints []string `json:"endpoints"` // etcd client URLs
	// Owner is true while this gateway holds a live ownership lease: it may serve sessions.
	Owner      bool      `json:"owner"`
	ValidUntil time.Time `json:"valid_until,omitzero"` // the ownership surely holds until then
	Members    []Member  `json:"members"`              // gateways with a live ownership lease
	Error      string    `json:"error,omitempty"`      // etcd could not be asked for the members
	Warnings   []string  `json:"warnings,omitempty"`   // e.g. members whose pools differ from this one's
}

// Member is one gateway of the cluster, as it announced itself in etcd.
type Member struct {
	Name    string    `json:"name"`
	Version string    `json:"version,omitempty"`
	Listen  []string  `json:"listen,omitempty"`
	Started time.Time `json:"started,omitzero"`
}

// PoolStatus is the occupancy of one pool.
type PoolStatus struct {
	Name    string   `json:"name"`
	Ranges  []string `json:"ranges"` // prefixes or ranges, as configured
	Size    uint64   `json:"size"`   // usable addresses (exclusions removed)
	Offered uint64   `json:"offered"`
	Active  uint64   `json:"active"`
	Held    uint64   `json:"held"`
	Static  uint64   `json:"static"` // static reservations
	Free    uint64   `json:"free"`
}

// revokeRequest and tokenRequest are request bodies.
type revokeRequest struct {
	Target string `json:"target"`
}

type tokenRequest struct {
	Identity string `json:"identity"`
	// TTL is a Go duration string ("10m"); empty means the default.
	TTL string `json:"ttl,omitempty"`
}

// errorBody is the body of every non-2xx response.
type errorBody struct {
	Code  string `json:"code"`  // not_found, invalid, unavailable, internal
	Error string `json:"error"` // message for the operator
}
