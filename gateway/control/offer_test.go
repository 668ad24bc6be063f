package control

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/tsp"
)

// TestOfferDNSDomains: the policy's dns_domains reach extended offers and never a v4v6 one
// (gogoc knows no such element).
func TestOfferDNSDomains(t *testing.T) {
	p, err := auth.NewPolicy(auth.PolicyConfig{Default: auth.Rule{
		Transports: []string{auth.TransportV4V6, auth.TransportV4AnyV6},
		DNS:        []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		DNSDomains: []string{"corp.example", "~lab.corp.example"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	rule, err := p.Resolve("alice@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	gw := config.Default()
	gw.TEP.InnerV4 = netip.MustParseAddr("100.64.0.1")
	gw.TEP.IPv6 = netip.MustParseAddr("2001:db8::1")
	o := &offers{gw: gw, policy: auth.NewPolicyHolder(p), plain: true, dtls: true, port: 3653}
	l := lease.Lease{Addr: netip.MustParseAddr("100.64.0.2"), State: lease.StateOffered, Expires: time.Now().Add(time.Minute)}
	ep := netip.MustParseAddr("2001:db8::2")

	ext := o.offer(tsp.TypeV4DTLSV6, rule, l, ep, [tsp.TokenLen]byte{1}, false, o.local())
	if !slices.Equal(ext.Client.DNSDomains, rule.DNSDomains) {
		t.Errorf("extended offer domains %v, want %v", ext.Client.DNSDomains, rule.DNSDomains)
	}
	classic := o.offer(tsp.TypeV4V6, rule, l, ep, [tsp.TokenLen]byte{1}, false, o.local())
	if classic.Client.DNSDomains != nil {
		t.Errorf("v4v6 offer carries domains %v", classic.Client.DNSDomains)
	}
}
