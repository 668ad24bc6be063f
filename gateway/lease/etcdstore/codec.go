package etcdstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

// ErrCorrupt is wrapped by errors about a value that does not decode.
var ErrCorrupt = errors.New("etcdstore: corrupt value")

// maxValue bounds a value this store decodes; records are a few hundred
// bytes and index entries at most eight addresses.
const maxValue = 16 << 10

// record is the JSON form of a lease record: readable with etcdctl, and
// fields a newer gateway adds are ignored by an older one (rolling upgrade).
type record struct {
	Addr      string    `json:"addr"`
	Pool      string    `json:"pool,omitempty"`
	Identity  string    `json:"identity"`
	Session   string    `json:"session,omitempty"`
	Endpoint  string    `json:"endpoint,omitempty"`
	Transport string    `json:"transport,omitempty"`
	Owner     string    `json:"owner,omitempty"`
	State     string    `json:"state"`
	Static    bool      `json:"static,omitempty"`
	Granted   time.Time `json:"granted,omitzero"`
	Expires   time.Time `json:"expires,omitzero"`
}

func encodeRecord(l lease.Lease) ([]byte, error) {
	if !l.Addr.Is4() {
		return nil, fmt.Errorf("etcdstore: %v is not an IPv4 address", l.Addr)
	}
	r := record{
		Addr: l.Addr.String(), Pool: l.Pool, Identity: l.Identity, Session: l.Session,
		Transport: l.Transport, Owner: l.Owner, State: l.State.String(), Static: l.Static,
		Granted: l.Granted.UTC(), Expires: l.Expires.UTC(),
	}
	if l.Granted.IsZero() {
		r.Granted = time.Time{}
	}
	if l.Expires.IsZero() {
		r.Expires = time.Time{}
	}
	if l.Endpoint.IsValid() {
		r.Endpoint = l.Endpoint.String()
	}
	return json.Marshal(r)
}

// decodeRecord decodes the value of the address key of addr.
func decodeRecord(addr netip.Addr, b []byte) (lease.Lease, error) {
	var l lease.Lease
	if len(b) > maxValue {
		return l, fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(b))
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return l, fmt.Errorf("%w: record: %w", ErrCorrupt, err)
	}
	a, err := netip.ParseAddr(r.Addr)
	if err != nil || a != addr {
		return l, fmt.Errorf("%w: record of %v names address %q", ErrCorrupt, addr, r.Addr)
	}
	l = lease.Lease{
		Addr: a, Pool: r.Pool, Identity: r.Identity, Session: r.Session, Transport: r.Transport,
		Owner: r.Owner, Static: r.Static, Granted: r.Granted.UTC(), Expires: r.Expires.UTC(),
	}
	if r.Granted.IsZero() {
		l.Granted = time.Time{}
	}
	if r.Expires.IsZero() {
		l.Expires = time.Time{}
	}
	switch r.State {
	case "offered":
		l.State = lease.StateOffered
	case "active":
		l.State = lease.StateActive
	case "held":
		l.State = lease.StateHeld
	default:
		return lease.Lease{}, fmt.Errorf("%w: record of %v: state %q", ErrCorrupt, addr, r.State)
	}
	if err := lease.ValidIdentity(r.Identity); err != nil {
		return lease.Lease{}, fmt.Errorf("%w: record of %v: %w", ErrCorrupt, addr, err)
	}
	if r.Endpoint != "" {
		if l.Endpoint, err = netip.ParseAddr(r.Endpoint); err != nil {
			return lease.Lease{}, fmt.Errorf("%w: record of %v: endpoint: %w", ErrCorrupt, addr, err)
		}
	}
	return l, nil
}

func encodeIndex(addrs []netip.Addr) ([]byte, error) {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		if !a.Is4() {
			return nil, fmt.Errorf("etcdstore: index address %v is not IPv4", a)
		}
		out[i] = a.String()
	}
	return json.Marshal(out)
}

func decodeIndex(b []byte) ([]netip.Addr, error) {
	if len(b) > maxValue {
		return nil, fmt.Errorf("%w: index entry of %d bytes", ErrCorrupt, len(b))
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return nil, fmt.Errorf("%w: index entry: %w", ErrCorrupt, err)
	}
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%w: index entry address %q", ErrCorrupt, s)
		}
		out = append(out, a)
	}
	return out, nil
}
