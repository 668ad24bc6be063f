package netns

import (
	"net/netip"
	"testing"
)

// Topology is the three-namespace network of the end-to-end tests:
//
//	Client  [ClientLink  ClientV6]  ── IPv6 ── [GatewayClientLink GatewayV6]  Gateway
//	Gateway [GatewayServerLink GatewayV4] ── IPv4 ── [ServerLink ServerV4]    Server
//
// The client has no IPv4 address and the server no IPv6 address; the gateway
// forwards IPv4 (ip_forward=1).
type Topology struct {
	Client, Gateway, Server *NS

	ClientV6, GatewayV6 netip.Addr // on the client–gateway link (/64)
	GatewayV4, ServerV4 netip.Addr // on the gateway–server link (/24)

	ClientLink, GatewayClientLink, GatewayServerLink, ServerLink string
}

// Default topology addresses (documentation and ULA ranges).
var (
	defaultClientV6  = netip.MustParsePrefix("fd00:d57a::2/64")
	defaultGatewayV6 = netip.MustParsePrefix("fd00:d57a::1/64")
	defaultGatewayV4 = netip.MustParsePrefix("198.51.100.1/24")
	defaultServerV4  = netip.MustParsePrefix("198.51.100.2/24")
)

// NewTopology builds the client–gateway–server topology and routes each prefix
// in serverRoutes (typically the gateway's lease pools) from the server via
// the gateway. Everything is removed in t.Cleanup.
func NewTopology(t testing.TB, serverRoutes ...netip.Prefix) *Topology {
	t.Helper()
	SkipUnlessRoot(t)
	tp := &Topology{
		Client:            New(t, "c"),
		Gateway:           New(t, "g"),
		Server:            New(t, "s"),
		ClientV6:          defaultClientV6.Addr(),
		GatewayV6:         defaultGatewayV6.Addr(),
		GatewayV4:         defaultGatewayV4.Addr(),
		ServerV4:          defaultServerV4.Addr(),
		ClientLink:        "dstmc0",
		GatewayClientLink: "dstmgc0",
		GatewayServerLink: "dstmgs0",
		ServerLink:        "dstms0",
	}
	steps := []func() error{
		func() error { return LinkVeth(tp.Client, tp.ClientLink, tp.Gateway, tp.GatewayClientLink) },
		func() error { return LinkVeth(tp.Gateway, tp.GatewayServerLink, tp.Server, tp.ServerLink) },
		func() error { return tp.Client.AddAddr(tp.ClientLink, defaultClientV6) },
		func() error { return tp.Gateway.AddAddr(tp.GatewayClientLink, defaultGatewayV6) },
		func() error { return tp.Gateway.AddAddr(tp.GatewayServerLink, defaultGatewayV4) },
		func() error { return tp.Server.AddAddr(tp.ServerLink, defaultServerV4) },
		func() error { return tp.Gateway.SetSysctl("net/ipv4/ip_forward", "1") },
	}
	for _, p := range serverRoutes {
		steps = append(steps, func() error { return tp.Server.AddRoute(p, tp.GatewayV4) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return tp
}
