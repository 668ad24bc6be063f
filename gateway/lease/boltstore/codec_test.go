package boltstore

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

func TestCodecRoundTrip(t *testing.T) {
	for _, r := range []lease.Record{
		{Version: 1, Lease: lease.Lease{Addr: netip.MustParseAddr("10.0.0.1"), State: lease.StateOffered}},
		{Version: 1 << 40, Lease: lease.Lease{Addr: netip.MustParseAddr("10.255.0.1"), Pool: "p", Identity: "alice@corp", Session: "s-1",
			Endpoint: netip.MustParseAddr("2001:db8::5"), Transport: "v4dtlsv6", State: lease.StateHeld, Static: true,
			Granted: time.Unix(1700000000, 123).UTC(), Expires: time.Unix(1700003600, 0).UTC()}},
		{Version: 3, Lease: lease.Lease{Addr: netip.MustParseAddr("192.0.2.1"), Endpoint: netip.MustParseAddr("192.0.2.9"), State: lease.StateActive}},
	} {
		b := encodeRecord(r)
		got, err := decodeRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if got != r {
			t.Fatalf("round trip:\n%+v\n%+v", got, r)
		}
	}
}

// FuzzDecodeRecord checks that any bytes either fail to decode or decode to
// a record that encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(lease.Record{Version: 2, Lease: lease.Lease{Addr: netip.MustParseAddr("10.0.0.1"), Identity: "a", Session: "s", State: lease.StateActive,
		Endpoint: netip.MustParseAddr("2001:db8::1"), Granted: time.Unix(5, 0), Expires: time.Unix(9, 0)}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if r.Lease.State > lease.StateHeld || !r.Lease.Addr.Is4() {
			t.Fatalf("invalid record decoded: %+v", r)
		}
		if again := encodeRecord(r); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
		}
	})
}

// FuzzDecodeIndex checks the identity index codec the same way.
func FuzzDecodeIndex(f *testing.F) {
	f.Add(encodeIndex([]netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		addrs, err := decodeIndex(b)
		if err != nil {
			return
		}
		if again := encodeIndex(addrs); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}
