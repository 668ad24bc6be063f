package tsp

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// §3.9: the offer gogoc accepted and used end to end (run dp), exact bytes.
const dpOffer = "Content-length: 467\r\n" +
	"200 Success\r\n" +
	"<tunnel action=\"info\" type=\"v4v6\" lifetime=\"25\">\r\n" +
	" <server>\r\n" +
	"  <address type=\"ipv4\">192.0.2.1</address>\r\n" +
	"  <address type=\"ipv6\">2001:db8:5572::1</address>\r\n" +
	" </server>\r\n" +
	" <client>\r\n" +
	"  <address type=\"ipv4\">192.0.2.2</address>\r\n" +
	"  <address type=\"ipv6\">2001:db8:5572::2</address>\r\n" +
	"  <keepalive interval=\"5\"><address type=\"ipv4\">192.0.2.1</address></keepalive>\r\n" +
	"  <dns_server><address type=\"ipv6\">2001:db8:5572::53</address></dns_server>\r\n" +
	" </client>\r\n" +
	"</tunnel>\r\n"

// §10.1: the loopback offer (no dns_server) and request, exact bytes.
const s1Offer = "Content-length: 367\r\n200 Success\r\n<tunnel action=\"info\" type=\"v4v6\" lifetime=\"1440\">\r\n <server>\r\n  <address type=\"ipv4\">192.0.2.1</address>\r\n  <address type=\"ipv6\">::1</address>\r\n </server>\r\n <client>\r\n  <address type=\"ipv4\">192.0.2.2</address>\r\n  <address type=\"ipv6\">::1</address>\r\n  <keepalive interval=\"30\"><address type=\"ipv4\">192.0.2.1</address></keepalive>\r\n </client>\r\n</tunnel>\r\n"

const s1Request = "Content-length: 212\r\n<tunnel action=\"create\" type=\"v4v6\" proxy=\"no\">\r\n <client>\r\n  <address type=\"ipv6\">::1</address>\r\n  <keepalive interval=\"30\">\r\n    <address type=\"ipv4\">127.0.0.1</address>\r\n  </keepalive>\r\n </client>\r\n</tunnel>\r\n"

// §3.8 with host_type=router, prefixlen 29 and a reverse-DNS server (run s12 layout).
const routerRequest = "<tunnel action=\"create\" type=\"v4v6\" proxy=\"no\">\r\n <client>\r\n  <address type=\"ipv6\">2001:db8::2</address>\r\n  <keepalive interval=\"30\">\r\n    <address type=\"ipv4\">127.0.0.1</address>\r\n  </keepalive>\r\n  <router>\r\n   <prefix length=\"29\"/>\r\n   <dns_server>\r\n     <address type=\"dn\">ns1.example.net</address>\r\n   </dns_server>\r\n  </router>\r\n </client>\r\n</tunnel>\r\n"

// offerBody splits "Content-length…\r\n200 Success\r\n<tunnel…" into the XML.
func offerXML(t *testing.T, framed string) string {
	t.Helper()
	body, err := ParseContent([]byte(framed))
	if err != nil {
		t.Fatal(err)
	}
	st, rest, err := ParseStatus(body)
	if err != nil || st.Code != 200 {
		t.Fatalf("status %+v %v", st, err)
	}
	return string(rest)
}

func TestTunnelGoldenBytes(t *testing.T) {
	dp := testOffer(gogocRequest(TypeV4V6, "2001:db8:5572::2"))
	s1 := &Tunnel{
		Action: ActionInfo, Type: TypeV4V6, Lifetime: 1440,
		Server: &Endpoint{IPv4: mustAddr("192.0.2.1"), IPv6: mustAddr("::1")},
		Client: &ClientInfo{IPv4: mustAddr("192.0.2.2"), IPv6: mustAddr("::1"),
			Keepalive: &Keepalive{Interval: 30, Address: mustAddr("192.0.2.1")}},
	}
	req, _ := ParseContent([]byte(s1Request))
	router := gogocRequest(TypeV4V6, "2001:db8::2")
	router.Client.Router = &Router{PrefixLen: 29, DNSNames: []string{"ns1.example.net"}}
	tests := []struct {
		name string
		t    *Tunnel
		want string
	}{
		{"dp offer §3.9", dp, offerXML(t, dpOffer)},
		{"s1 offer §10.1", s1, offerXML(t, s1Offer)},
		{"s1 request §10.1", gogocRequest(TypeV4V6, "::1"), string(req)},
		{"router request §3.8", router, routerRequest},
		{"accept", &Tunnel{Action: ActionAccept}, "<tunnel action=\"accept\"></tunnel>\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.t.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("Marshal:\n got %q\nwant %q", got, tt.want)
			}
			back, err := ParseTunnel(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.t) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", back, tt.t)
			}
		})
	}
	// The full framed offer, as the server sends it.
	if got := string(MarshalContent(append(NewStatus(200).Marshal(), mustMarshal(t, dp)...))); got != dpOffer {
		t.Fatalf("framed dp offer:\n got %q\nwant %q", got, dpOffer)
	}
}

func mustMarshal(t *testing.T, x *Tunnel) []byte {
	t.Helper()
	b, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTunnelExtendedRoundTrip(t *testing.T) {
	for _, typ := range []TunnelType{TypeV4DTLSV6, TypeV4TLSV6, TypeV4AnyV6} {
		t.Run(string(typ), func(t *testing.T) {
			o := testOffer(gogocRequest(typ, "2001:db8::2"))
			o.Client.Router = &Router{PrefixLen: 29, Prefix: mustAddr("198.51.100.8")}
			o.Client.DN = "alice.vpn.example"
			o.Client.DNSDomains = []string{"corp.example", "~lab.corp.example"}
			b := mustMarshal(t, o)
			for _, frag := range []string{` mtu="1400"`, `<routes>`,
				"  <dns_domains><domain>corp.example</domain><domain>~lab.corp.example</domain></dns_domains>\r\n", `<prefix length="8">10.0.0.0</prefix>`,
				`<address type="ipv4">192.0.2.53</address>`, `port="3653"`, `token="a0a1`} {
				if !strings.Contains(string(b), frag) {
					t.Errorf("missing %q in %s", frag, b)
				}
			}
			back, err := ParseTunnel(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, o) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", back, o)
			}
		})
	}
	// Empty routes element = split tunnel with no routes, distinct from absent.
	o := testOffer(gogocRequest(TypeV4DTLSV6, "2001:db8::2"))
	o.Client.Routes = []netip.Prefix{}
	back, err := ParseTunnel(mustMarshal(t, o))
	if err != nil || back.Client.Routes == nil || len(back.Client.Routes) != 0 {
		t.Fatalf("empty routes: %+v %v", back.Client.Routes, err)
	}
}

func TestParseTunnelTolerance(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"LF only", strings.ReplaceAll(routerRequest, "\r\n", "\n")},
		{"prolog and reordered", `<?xml version="1.0"?><tunnel type="V4V6" action="CREATE"><client><unknown a="b"/><keepalive interval="30"><address type="ipv4">127.0.0.1</address></keepalive><address type="IPV6"> 2001:db8::2 </address></client></tunnel>`},
		{"tsp-ruby delete", `<tunnel action="delete"></tunnel>`},
		{"self-closing", `<tunnel action="info" type="v6anyv4"/>`},
	}
	for _, tt := range tests {
		if _, err := ParseTunnel([]byte(tt.in)); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

func TestParseTunnelStrict(t *testing.T) {
	wrap := func(client string) string {
		return `<tunnel action="create" type="v4v6"><client>` + client + `</client></tunnel>`
	}
	tests := []struct {
		name string
		in   string
	}{
		{"not tunnel", `<tunnels action="create"/>`},
		{"bad action", `<tunnel action="destroy"/>`},
		{"bad type", `<tunnel action="create" type="v9v9"/>`},
		{"bad proxy", `<tunnel action="create" proxy="maybe"/>`},
		{"bad lifetime", `<tunnel action="info" lifetime="-1"/>`},
		{"huge lifetime", `<tunnel action="info" lifetime="99999999999"/>`},
		{"mtu overflow", `<tunnel action="info" mtu="70000"/>`},
		{"v4 as v6", wrap(`<address type="ipv6">192.0.2.1</address>`)},
		{"mapped v6", wrap(`<address type="ipv6">::ffff:192.0.2.1</address>`)},
		{"zone", wrap(`<address type="ipv6">fe80::1%eth0</address>`)},
		{"v6 as v4", wrap(`<address type="ipv4">::1</address>`)},
		{"unknown addr type", wrap(`<address type="ipx">1</address>`)},
		{"dup v6", wrap(`<address type="ipv6">::1</address><address type="ipv6">::2</address>`)},
		{"bad dn", wrap(`<address type="dn">a&lt;b</address>`)},
		{"route host bits", wrap(`<routes><prefix length="8">10.1.0.0</prefix></routes>`)},
		{"route v6", wrap(`<routes><prefix length="64">2001:db8::</prefix></routes>`)},
		{"prefix too long", wrap(`<router><prefix length="33"/></router>`)},
		{"two keepalive addrs", wrap(`<keepalive interval="5"><address type="ipv4">1.1.1.1</address><address type="ipv4">1.1.1.2</address></keepalive>`)},
		{"short token", `<tunnel action="info"><data token="abcd" port="1" transports="v4dtlsv6"/></tunnel>`},
		{"bad transport", `<tunnel action="info"><data token="` + strings.Repeat("ab", 32) + `" port="1" transports="v4v6"/></tunnel>`},
		{"port zero", `<tunnel action="info"><data token="` + strings.Repeat("ab", 32) + `" port="0" transports="v4dtlsv6"/></tunnel>`},
		{"trailing garbage", `<tunnel action="accept"></tunnel>x`},
		{"second element", `<tunnel action="accept"></tunnel><tunnel action="accept"></tunnel>`},
		{"unclosed", `<tunnel action="accept">`},
		{"empty", ``},
	}
	for _, tt := range tests {
		if got, err := ParseTunnel([]byte(tt.in)); err == nil {
			t.Errorf("%s: accepted as %+v", tt.name, got)
		}
	}
}

func TestTunnelMarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		t    *Tunnel
	}{
		{"no action", &Tunnel{}},
		{"v6 in server ipv4", &Tunnel{Action: ActionInfo, Server: &Endpoint{IPv4: mustAddr("::1")}}},
		{"route not masked", &Tunnel{Action: ActionInfo, Client: &ClientInfo{Routes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/8")}}}},
		{"markup in dn", &Tunnel{Action: ActionInfo, Client: &ClientInfo{DN: `a"><x`}}},
		{"bad broker", &Tunnel{Action: ActionInfo, Brokers: []BrokerAddress{{Type: "ipv4", Value: "::1"}}}},
		{"markup in dns domain", &Tunnel{Action: ActionInfo, Client: &ClientInfo{DNSDomains: []string{"a</domain><x>"}}}},
		{"trailing dot in dns domain", &Tunnel{Action: ActionInfo, Client: &ClientInfo{DNSDomains: []string{"corp.example."}}}},
		{"too many dns domains", &Tunnel{Action: ActionInfo, Client: &ClientInfo{DNSDomains: strings.Split("a,b,c,d,e,f,g,h,i", ",")}}},
	}
	for _, tt := range tests {
		if b, err := tt.t.Marshal(); err == nil {
			t.Errorf("%s: marshalled %q", tt.name, b)
		}
	}
}
