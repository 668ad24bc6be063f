package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestPoolErrors: every pool the gateway would refuse at start (the lease manager, the routes
// into the TUN device) is refused here first, with the field that is wrong.
func TestPoolErrors(t *testing.T) {
	pool := func(body string) string { return "pools:\n  - name: a\n" + body }
	tests := []struct {
		name, yaml, want string
	}{
		// overlaps, within one pool and across pools, for prefixes and ranges
		{"two prefixes of one pool", pool("    prefixes: [10.0.0.0/24, 10.0.0.128/25]\n"),
			"pools[0].prefixes[1]: 10.0.0.128/25 overlaps pools[0].prefixes[0] (10.0.0.0/24)"},
		{"range inside a prefix of the same pool", pool("    prefixes: [10.0.0.0/24]\n    ranges: [{first: 10.0.0.10, last: 10.0.0.20}]\n"),
			"pools[0].ranges[0]: 10.0.0.10-10.0.0.20 overlaps pools[0].prefixes[0] (10.0.0.0/24)"},
		{"two ranges of one pool", pool("    ranges: [{first: 10.0.0.1, last: 10.0.0.9}, {first: 10.0.0.9, last: 10.0.0.12}]\n"),
			"pools[0].ranges[1]: 10.0.0.9-10.0.0.12 overlaps pools[0].ranges[0] (10.0.0.1-10.0.0.9)"},
		{"prefixes of two pools", pool("    prefixes: [10.0.0.0/24]\n") + "  - name: b\n    prefixes: [10.0.0.0/25]\n",
			"pools[1].prefixes[0]: 10.0.0.0/25 overlaps pools[0].prefixes[0] (10.0.0.0/24)"},
		{"range of one pool, prefix of another", pool("    ranges: [{first: 10.0.1.250, last: 10.0.2.5}]\n") + "  - name: b\n    prefixes: [10.0.2.0/24]\n",
			"pools[1].prefixes[0]: 10.0.2.0/24 overlaps pools[0].ranges[0] (10.0.1.250-10.0.2.5)"},
		{"ranges of two pools", pool("    ranges: [{first: 10.0.0.1, last: 10.0.0.9}]\n") + "  - name: b\n    ranges: [{first: 10.0.0.5, last: 10.0.0.5}]\n",
			"pools[1].ranges[0]: 10.0.0.5-10.0.0.5 overlaps pools[0].ranges[0] (10.0.0.1-10.0.0.9)"},

		// nothing left to lease
		{"only address is the inner address", "tep:\n  inner_v4: 10.0.0.1\n" + pool("    prefixes: [10.0.0.1/32]\n"),
			`pools[0]: pool "a" has no address to lease: its only address 10.0.0.1 is tep.inner_v4`},
		{"only address is the inner address, range", "tep:\n  inner_v4: 10.0.0.1\n" + pool("    ranges: [{first: 10.0.0.1, last: 10.0.0.1}]\n"),
			`pools[0]: pool "a" has no address to lease: its only address 10.0.0.1 is tep.inner_v4`},
		{"/30 without network, broadcast and inner", "tep:\n  inner_v4: 10.0.0.1\n" + pool("    prefixes: [10.0.0.0/30]\n    exclude: [10.0.0.2/32]\n"),
			`pools[0]: pool "a" has no address to lease`},
		{"everything excluded", pool("    prefixes: [10.0.0.0/24]\n    exclude: [10.0.0.0/16]\n"),
			`pools[0]: pool "a" has no address to lease: exclude and exclude_network_broadcast remove every address`},

		// addresses that are no pool
		{"default route", pool("    prefixes: [0.0.0.0/0]\n"), "pools[0].prefixes[0]: 0.0.0.0/0 is every IPv4 address"},
		{"multicast", pool("    prefixes: [10.0.0.0/24]\n") + "  - name: b\n    prefixes: [224.0.0.0/24]\n",
			"pools[1].prefixes[0]: 224.0.0.0/24 is multicast"},
		{"multicast range", pool("    ranges: [{first: 239.1.1.1, last: 239.1.1.9}]\n"), "pools[0].ranges[0]: 239.1.1.1-239.1.1.9 is multicast"},
		{"class E", pool("    prefixes: [240.0.0.0/8]\n"), "pools[0].prefixes[0]: 240.0.0.0/8 is reserved (class E, 240.0.0.0/4)"},
		{"limited broadcast", pool("    prefixes: [255.255.255.255/32]\n"), "pools[0].prefixes[0]: 255.255.255.255/32 is the limited broadcast address"},
		{"limited broadcast range", pool("    ranges: [{first: 255.255.255.255, last: 255.255.255.255}]\n"), "pools[0].ranges[0]: 255.255.255.255-255.255.255.255 is the limited broadcast address"},
		{"loopback", pool("    prefixes: [127.0.0.0/24]\n"), "pools[0].prefixes[0]: 127.0.0.0/24 is loopback (127.0.0.0/8)"},
		{"link-local", pool("    prefixes: [169.254.0.0/16]\n"), "pools[0].prefixes[0]: 169.254.0.0/16 is link-local (169.254.0.0/16)"},
		{"this network", pool("    prefixes: [0.0.0.0/8]\n"), `pools[0].prefixes[0]: 0.0.0.0/8 is "this network" (0.0.0.0/8)`},
		{"prefix that includes multicast", pool("    prefixes: [192.0.0.0/2]\n"), "pools[0].prefixes[0]: 192.0.0.0/2 includes multicast (224.0.0.0/4)"},
		{"range that includes link-local", pool("    ranges: [{first: 169.253.255.0, last: 169.254.0.10}]\n"),
			"pools[0].ranges[0]: 169.253.255.0-169.254.0.10 includes link-local (169.254.0.0/16)"},

		// the inner address and static addresses
		{"inner address loopback", "tep:\n  inner_v4: 127.0.0.1\n", "tep.inner_v4: 127.0.0.1 is loopback (127.0.0.0/8)"},
		{"inner address unspecified", "tep:\n  inner_v4: 0.0.0.0\n", `tep.inner_v4: 0.0.0.0 is "this network" (0.0.0.0/8)`},
		{"static is the inner address", "policy:\n  identities:\n    alice:\n      static_v4: 100.64.0.1\n",
			`policy.identities["alice"].static_v4: 100.64.0.1 is tep.inner_v4, the gateway's own address`},
		{"static is a network address", "policy:\n  identities:\n    alice:\n      static_v4: 100.64.0.0\n",
			`policy.identities["alice"].static_v4: 100.64.0.0 is excluded from pool "default"`},
		{"static is excluded", pool("    prefixes: [10.0.0.0/24]\n    exclude: [10.0.0.16/28]\n") + "policy:\n  identities:\n    alice:\n      static_v4: 10.0.0.17\n",
			`policy.identities["alice"].static_v4: 10.0.0.17 is excluded from pool "a"`},

		// the plain transport binds tep.ipv6
		{"plain transport without ipv6", "tep:\n  plain_transport: true\n", "tep.ipv6: required with tep.plain_transport"},
		{"unspecified ipv6", "tep:\n  ipv6: \"::\"\n", "tep.ipv6: :: is not a unicast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.yaml)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// TestPoolsAccepted: what the checks above must not refuse.
func TestPoolsAccepted(t *testing.T) {
	tests := []struct{ name, yaml string }{
		{"adjacent prefixes", "pools:\n  - name: a\n    prefixes: [10.0.0.0/25, 10.0.0.128/25]\n"},
		{"adjacent range and prefix across pools", "pools:\n  - name: a\n    ranges: [{first: 10.0.0.200, last: 10.0.0.255}]\n  - name: b\n    prefixes: [10.0.1.0/24]\n"},
		{"inner address inside the pool", "tep:\n  inner_v4: 10.0.0.1\npools:\n  - name: a\n    prefixes: [10.0.0.0/30]\n"},
		{"/32 pool", "pools:\n  - name: a\n    prefixes: [10.0.0.7/32]\n"},
		{"/31 keeps both addresses", "tep:\n  inner_v4: 10.0.0.0\npools:\n  - name: a\n    prefixes: [10.0.0.0/31]\n"},
		{"network address leased when asked", "pools:\n  - name: a\n    prefixes: [10.0.0.0/30]\n    exclude_network_broadcast: false\npolicy:\n  identities:\n    alice:\n      static_v4: 10.0.0.0\n"},
		{"just below multicast", "pools:\n  - name: a\n    ranges: [{first: 223.255.255.0, last: 223.255.255.255}]\n"},
		{"plain transport with ipv6", "tep:\n  ipv6: 2001:db8::1\n  plain_transport: true\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.yaml)); err != nil {
				t.Fatalf("refused: %v\n%s", err, tt.yaml)
			}
		})
	}
}

func TestPoolPrefixes(t *testing.T) {
	c := Default()
	c.Pools = []Pool{
		{Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}},
		{Name: "b", Ranges: []Range{{First: netip.MustParseAddr("10.1.0.1"), Last: netip.MustParseAddr("10.1.0.6")}}},
		{Name: "c", Ranges: []Range{{First: netip.MustParseAddr("0.0.0.0"), Last: netip.MustParseAddr("255.255.255.255")}}},
	}
	got := c.PoolPrefixes()
	want := map[string]string{"a": "[10.0.0.0/24]", "b": "[10.1.0.1/32 10.1.0.2/31 10.1.0.4/31 10.1.0.6/32]", "c": "[0.0.0.0/0]"}
	for name, w := range want {
		if g := fmt.Sprint(got[name]); g != w {
			t.Errorf("pool %s: %s, want %s", name, g, w)
		}
	}
}

func TestAccessRulesNamePools(t *testing.T) {
	_, err := Parse([]byte(`
pools:
  - {name: staff, prefixes: [100.64.0.0/24]}
  - {name: ops, prefixes: [100.64.1.0/24]}
policy:
  groups:
    staff:
      pool: staff
      access:
        outbound: [{to_pools: [ops], proto: tcp, ports: [22]}]
    ops:
      pool: ops
      access:
        inbound: [{from_pools: [staff], proto: tcp, ports: [22]}, {from_pools: [nope]}]
`))
	if err == nil || !strings.Contains(err.Error(), `policy.groups["ops"].access.inbound[1].from_pools[0]: unknown pool "nope"`) {
		t.Fatalf("unknown pool: %v", err)
	}
	cfg, err := Parse([]byte(`
pools:
  - {name: staff, prefixes: [100.64.0.0/24]}
  - {name: ops, prefixes: [100.64.1.0/24]}
policy:
  groups:
    staff:
      pool: staff
      access:
        outbound: [{to_pools: [ops], proto: tcp, ports: [22]}]
  identities:
    alice@corp: {groups: [staff]}
  tests:
    - identity: alice@corp
      allow: [100.64.1.9:22/tcp]
      deny: [100.64.0.9:22/tcp]
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Policy.Pools["ops"]; !ok {
		t.Fatal("pools not handed to the policy")
	}
}
