package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

// recordFormat is the first byte of every encoded lease record.
const recordFormat = 1

// maxField bounds any string field of a record (identities are at most 255
// bytes; sessions, pools and transports are short).
const maxField = 4096

var (
	errShort        = errors.New("truncated")
	errNonCanonical = errors.New("bad or non-minimal varint")
)

// encodeRecord encodes r as:
//
//	format(1) version(uvarint) addr(4) state(1) static(1)
//	granted(varint unix ns) expires(varint unix ns)
//	endpoint(len byte, 0/4/16 bytes) pool identity session transport (uvarint len + bytes each)
func encodeRecord(r lease.Record) []byte {
	l := r.Lease
	b := make([]byte, 0, 64+len(l.Pool)+len(l.Identity)+len(l.Session)+len(l.Transport))
	b = append(b, recordFormat)
	b = binary.AppendUvarint(b, r.Version)
	a4 := l.Addr.As4()
	b = append(b, a4[:]...)
	b = append(b, byte(l.State), boolByte(l.Static))
	b = binary.AppendVarint(b, timeNS(l.Granted))
	b = binary.AppendVarint(b, timeNS(l.Expires))
	ep := l.Endpoint.AsSlice()
	b = append(b, byte(len(ep)))
	b = append(b, ep...)
	for _, s := range []string{l.Pool, l.Identity, l.Session, l.Transport} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func timeNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func nsTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		d.err = errNonCanonical
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) {
		d.err = errNonCanonical
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > maxField {
		d.err = fmt.Errorf("field of %d bytes", n)
		return ""
	}
	return string(d.bytes(int(n)))
}

func decodeRecord(b []byte) (lease.Record, error) {
	d := &decoder{b: b}
	if f := d.bytes(1); d.err == nil && f[0] != recordFormat {
		return lease.Record{}, fmt.Errorf("%w: record format %d", ErrCorrupt, f[0])
	}
	var r lease.Record
	r.Version = d.uvarint()
	if a := d.bytes(4); d.err == nil {
		r.Lease.Addr = netip.AddrFrom4([4]byte(a))
	}
	if sb := d.bytes(2); d.err == nil {
		r.Lease.State, r.Lease.Static = lease.State(sb[0]), sb[1] == 1
		if sb[0] > byte(lease.StateHeld) || sb[1] > 1 {
			return lease.Record{}, fmt.Errorf("%w: bad state bytes %x", ErrCorrupt, sb)
		}
	}
	r.Lease.Granted = nsTime(d.varint())
	r.Lease.Expires = nsTime(d.varint())
	r.Lease.Endpoint = decodeEndpoint(d)
	r.Lease.Pool, r.Lease.Identity, r.Lease.Session, r.Lease.Transport = d.str(), d.str(), d.str(), d.str()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return lease.Record{}, fmt.Errorf("%w: lease record: %w", ErrCorrupt, d.err)
	}
	return r, nil
}

func decodeEndpoint(d *decoder) netip.Addr {
	n := d.bytes(1)
	if d.err != nil {
		return netip.Addr{}
	}
	switch n[0] {
	case 0:
		return netip.Addr{}
	case 4, 16:
		a, _ := netip.AddrFromSlice(d.bytes(int(n[0])))
		return a
	}
	d.err = fmt.Errorf("endpoint length %d", n[0])
	return netip.Addr{}
}

// encodeIndex encodes an identity's address list: 4 bytes per address.
func encodeIndex(addrs []netip.Addr) []byte {
	b := make([]byte, 0, 4*len(addrs))
	for _, a := range addrs {
		a4 := a.As4()
		b = append(b, a4[:]...)
	}
	return b
}

func decodeIndex(b []byte) ([]netip.Addr, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%w: index entry of %d bytes", ErrCorrupt, len(b))
	}
	out := make([]netip.Addr, 0, len(b)/4)
	for i := 0; i < len(b); i += 4 {
		out = append(out, netip.AddrFrom4([4]byte(b[i:i+4])))
	}
	return out, nil
}
