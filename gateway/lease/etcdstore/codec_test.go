package etcdstore

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

func TestCodecRoundTrip(t *testing.T) {
	for _, l := range []lease.Lease{
		{Addr: netip.MustParseAddr("10.0.0.1"), Identity: "a", State: lease.StateOffered},
		{Addr: netip.MustParseAddr("10.255.0.1"), Pool: "p", Identity: "alice@corp", Session: "s-1", Owner: "gw-2",
			Endpoint: netip.MustParseAddr("2001:db8::5"), Transport: "v4dtlsv6", State: lease.StateActive, Static: true,
			Granted: time.Unix(1700000000, 123).UTC(), Expires: time.Unix(1700003600, 0).UTC()},
		{Addr: netip.MustParseAddr("192.0.2.1"), Identity: "b", State: lease.StateHeld, Expires: time.Unix(5, 0).UTC()},
	} {
		b, err := encodeRecord(l)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(l.Addr, b)
		if err != nil {
			t.Fatal(err)
		}
		if got != l {
			t.Fatalf("round trip:\n%+v\n%+v", got, l)
		}
	}
}

func TestDecodeRecordRefuses(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	for _, tc := range []struct{ name, in string }{
		{"not json", `{`},
		{"other address", `{"addr":"10.0.0.2","identity":"a","state":"held"}`},
		{"free state", `{"addr":"10.0.0.1","identity":"a","state":"free"}`},
		{"no identity", `{"addr":"10.0.0.1","state":"held"}`},
		{"control character", `{"addr":"10.0.0.1","identity":"a\u0007","state":"held"}`},
		{"bad endpoint", `{"addr":"10.0.0.1","identity":"a","state":"held","endpoint":"x"}`},
		{"bad time", `{"addr":"10.0.0.1","identity":"a","state":"held","expires":"soon"}`},
	} {
		if _, err := decodeRecord(a, []byte(tc.in)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", tc.name, err)
		}
	}
	// Fields of a newer gateway are ignored (rolling upgrade).
	if _, err := decodeRecord(a, []byte(`{"addr":"10.0.0.1","identity":"a","state":"held","future":1}`)); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeRecord checks that what decodes encodes to a value that decodes
// to the same lease.
func FuzzDecodeRecord(f *testing.F) {
	b, _ := encodeRecord(lease.Lease{Addr: netip.MustParseAddr("10.0.0.1"), Identity: "a", Session: "s", Owner: "gw",
		State: lease.StateActive, Endpoint: netip.MustParseAddr("2001:db8::1"), Granted: time.Unix(5, 0), Expires: time.Unix(9, 0)})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		a := netip.MustParseAddr("10.0.0.1")
		l, err := decodeRecord(a, b)
		if err != nil {
			return
		}
		if l.State == lease.StateFree || l.State > lease.StateHeld || l.Addr != a || lease.ValidIdentity(l.Identity) != nil {
			t.Fatalf("invalid record decoded: %+v", l)
		}
		again, err := encodeRecord(l)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := decodeRecord(a, again)
		if err != nil || l2 != l {
			t.Fatalf("re-encoding differs: %+v %v\n%+v", l2, err, l)
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	b, _ := encodeIndex([]netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		addrs, err := decodeIndex(b)
		if err != nil {
			return
		}
		again, err := encodeIndex(addrs)
		if err != nil {
			t.Fatal(err)
		}
		addrs2, err := decodeIndex(again)
		if err != nil || len(addrs2) != len(addrs) {
			t.Fatalf("re-decoding: %v %v", addrs2, err)
		}
		for i := range addrs {
			if addrs[i] != addrs2[i] {
				t.Fatalf("re-decoding differs at %d", i)
			}
		}
	})
}
