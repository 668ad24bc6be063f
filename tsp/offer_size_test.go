package tsp

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestOfferReplyFraming compares offerReply's single-buffer framing with
// status line + XML through MarshalContent, for offers from 3-digit lengths
// to past the 4096-byte limit, which gets a framed 310 on every transport.
func TestOfferReplyFraming(t *testing.T) {
	srv := newStepper(t, TransportTCP, &fakeBackend{mode: "ok"}).srv
	var brokers []BrokerAddress
	accepted, refused := 0, 0
	for nb := 0; nb <= 40; nb++ {
		for _, dn := range []string{"", "a", strings.Repeat("b", 100), strings.Repeat("c", 253)} {
			o := testOffer(gogocRequest(TypeV4AnyV6, "2001:db8::2"))
			for i := range MaxRoutes {
				o.Client.Routes = append(o.Client.Routes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24))
			}
			o.Client.DN = dn
			o.Brokers = brokers
			x, err := o.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want := MarshalContent(append(NewStatus(StatusSuccess).Marshal(), x...))
			got, err := srv.offerReply(o)
			if len(want) <= MaxDatagramPayload {
				accepted++
				if err != nil || len(got) != 1 || !bytes.Equal(got[0].Payload, want) {
					t.Fatalf("%d brokers, DN %d: got %v %v, want %q", nb, len(dn), got, err, want)
				}
				continue
			}
			refused++
			var se *StatusError
			if !errors.As(err, &se) || se.Code != StatusServerError || len(got) != 1 ||
				string(got[0].Payload) != "Content-length: 23\r\n310 Server side error\r\n" {
				t.Fatalf("%d brokers, DN %d: %d-byte offer gave %v %v, want a framed 310", nb, len(dn), len(want), got, err)
			}
		}
		brokers = append(brokers, BrokerAddress{Type: "dn", Value: strings.Repeat("d", 60) + ".example"})
	}
	if accepted == 0 || refused == 0 {
		t.Fatalf("%d offers accepted, %d refused: the sizes do not cross the limit", accepted, refused)
	}
}
