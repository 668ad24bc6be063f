package client

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/internal/dnsconf"
	"github.com/dstmgw/dstm/internal/logging/logtest"
	"github.com/dstmgw/dstm/tsp"
)

func TestDNSFor(t *testing.T) {
	servers := []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	split := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name         string
		routes       []netip.Prefix
		domains      []string
		defaultRoute bool
	}{
		{"full tunnel", nil, []string{"corp.example"}, true},
		{"split tunnel with domains", split, []string{"corp.example", "~lab.corp.example"}, false},
		{"split tunnel without domains", split, nil, true},
		{"split tunnel, every name", split, []string{"~.", "corp.example"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &tsp.Tunnel{Type: tsp.TypeV4DTLSV6, Client: &tsp.ClientInfo{DNSServers: servers, Routes: tc.routes, DNSDomains: tc.domains}}
			got := dnsFor(o, 5)
			want := dnsconf.Config{Servers: servers, Domains: tc.domains, DefaultRoute: tc.defaultRoute, Link: 5}
			if !got.Equal(want) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
	// The classic offer's dns_server is gogoc's (maybe the gateway's own address): not used.
	classic := &tsp.Tunnel{Type: tsp.TypeV4V6, Client: &tsp.ClientInfo{DNSServers: []netip.Addr{netip.MustParseAddr("2001:db8::1")}}}
	if got := dnsFor(classic, 5); len(got.Servers) != 0 {
		t.Fatalf("v4v6 offer: servers %v", got.Servers)
	}
}

// TestApplyDNSAcrossSessions drives the client's DNS steps in resolv.conf mode on the
// loopback device (no root): applied once, untouched by a reconnect with the same offer,
// rewritten when the servers change, restored when the servers go and at the end of `up`.
func TestApplyDNSAcrossSessions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	orig := []byte("nameserver 192.0.2.1\n")
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	var sink logtest.Sink
	cfg := Config{Gateway: "gw", Device: "lo", DNS: DNSResolvConf, ResolvConf: path, StateDir: filepath.Join(dir, "state")}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	c := &Client{cfg: cfg, log: zerolog.New(&sink)}
	offer := &tsp.Tunnel{Type: tsp.TypeV4AnyV6, Client: &tsp.ClientInfo{
		DNSServers: []netip.Addr{netip.MustParseAddr("10.0.0.53")}, DNSDomains: []string{"corp.example"},
	}}
	read := func() []byte {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c.applyDNS(offer)
	if got := read(); !bytes.Contains(got, []byte("nameserver 10.0.0.53\nsearch corp.example\n")) {
		t.Fatalf("after the first session: %q", got)
	}
	fi, _ := os.Stat(path)
	c.applyDNS(offer) // a reconnect
	if fi2, _ := os.Stat(path); !os.SameFile(fi, fi2) {
		t.Error("a reconnect with the same offer rewrote resolv.conf")
	}
	if n := len(sink.Find(t, "DNS configured", map[string]any{"dns_method": "resolv.conf", "device": "lo"})); n != 1 {
		t.Errorf("%d \"DNS configured\" lines, want 1", n)
	}
	offer.Client.DNSServers = []netip.Addr{netip.MustParseAddr("10.0.0.54")}
	c.applyDNS(offer)
	if got := read(); !bytes.Contains(got, []byte("nameserver 10.0.0.54\n")) {
		t.Fatalf("after the servers changed: %q", got)
	}
	offer.Client.DNSServers = nil
	c.applyDNS(offer)
	if got := read(); !bytes.Equal(got, orig) {
		t.Fatalf("after the servers went: %q, want the original", got)
	}
	offer.Client.DNSServers = []netip.Addr{netip.MustParseAddr("10.0.0.55")}
	c.applyDNS(offer)
	c.restoreDNS() // up ends
	if got := read(); !bytes.Equal(got, orig) {
		t.Fatalf("after up: %q, want the original", got)
	}
	if len(sink.Find(t, "DNS configuration restored", map[string]any{"dns_method": "resolv.conf"})) != 2 {
		t.Error("want two \"DNS configuration restored\" lines")
	}
	// Off: nothing is touched.
	c.cfg.DNS = DNSOff
	c.applyDNS(offer)
	if got := read(); !bytes.Equal(got, orig) {
		t.Fatalf("with dns off: %q", got)
	}
}
