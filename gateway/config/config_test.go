package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefaultsValidate(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("embedded defaults do not validate: %v", err)
	}
	cfg2, err := Parse(nil)
	if err != nil {
		t.Fatalf("empty file: %v", err)
	}
	if cfg2.Leases.Lifetime.D() != time.Hour {
		t.Fatalf("lifetime default = %s", cfg2.Leases.Lifetime.D())
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "bogus: 1\n", "field bogus not found"},
		{"unknown nested key", "tep:\n  inner_v6: ::1\n", "field inner_v6 not found"},
		{"relative state dir", "state_dir: var/lib\n", "state_dir: must be an absolute path"},
		{"bad duration", "leases:\n  lifetime: forever\n", `"forever" is not a duration`},
		{"bad size", "memory_limit: 2G\n", `"2G" is not a size`},
		{"size without unit", "memory_limit: 2048\n", `"2048" is not a size`},
		{"memory limit too low", "memory_limit: 16MiB\n", "memory_limit: 16MiB is below 64MiB"},
		{"lifetime too short", "leases:\n  lifetime: 1s\n", "leases.lifetime: 1s is outside"},
		{"bad limit policy", "leases:\n  on_limit: ignore\n", "leases.on_limit"},
		{"inner not v4", "tep:\n  inner_v4: 2001:db8::1\n", "tep.inner_v4"},
		{"outer not v6", "tep:\n  ipv6: 192.0.2.1\n", "tep.ipv6"},
		{"mtu", "tep:\n  mtu: 100\n", "tep.mtu: 100 is outside"},
		{"device name", "tep:\n  device: averyveryverylongname\n", "tep.device"},
		{"no pools", "pools: []\n", "pools: at least one pool"},
		{"host bits", "pools:\n  - name: a\n    prefixes: [10.0.0.1/24]\n", "pools[0].prefixes[0]"},
		{"overlap", "pools:\n  - name: a\n    prefixes: [10.0.0.0/24]\n  - name: b\n    prefixes: [10.0.0.0/25]\n", "overlaps"},
		{"duplicate pool", "pools:\n  - name: a\n    prefixes: [10.0.0.0/24]\n  - name: a\n    prefixes: [10.1.0.0/24]\n", "defined twice"},
		{"range order", "pools:\n  - name: a\n    ranges: [{first: 10.0.0.9, last: 10.0.0.1}]\n", "pools[0].ranges[0]"},
		{"plain policy", "tsp:\n  plain: sometimes\n", "tsp.plain"},
		{"digest without file", "tsp:\n  digest_md5: true\n", "tsp.passwords"},
		{"log level", "log:\n  level: loud\n", "log.level"},
		{"metrics addr", "metrics:\n  listen: nonsense\n", "metrics.listen"},
		{"policy pool", "policy:\n  default:\n    pool: nowhere\n", `policy.default.pool: pool "nowhere" is not defined`},
		{"static outside pools", "policy:\n  identities:\n    alice:\n      static_v4: 192.0.2.9\n", "static_v4: 192.0.2.9 is in no pool"},
		{"listen port", "listen:\n  addresses: [\"[::1]:0\"]\n", "listen.addresses[0]"},
		{"etcd no endpoints", "store:\n  etcd: {}\n", "store.etcd.endpoints: at least one"},
		{"etcd endpoint scheme", "store:\n  etcd:\n    endpoints: [\"10.0.0.1:2379\"]\n", "store.etcd.endpoints[0]: want http"},
		{"etcd endpoint port", "store:\n  etcd:\n    endpoints: [\"http://10.0.0.1\"]\n", "store.etcd.endpoints[0]: \"http://10.0.0.1\" has no port"},
		{"etcd https without tls", "store:\n  etcd:\n    endpoints: [\"https://e1:2379\"]\n", "store.etcd.tls.ca is needed"},
		{"etcd http with tls", "store:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n    tls: {ca: /etc/ca.pem}\n", "plain http but store.etcd.tls is set"},
		{"etcd name", "store:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n    name: \"gw 1\"\n", "store.etcd.name"},
		{"etcd prefix", "store:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n    prefix: dstm\n", "store.etcd.prefix"},
		{"etcd ttl", "store:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n    ttl: 1500ms\n", "store.etcd.ttl"},
		{"etcd txn ops", "store:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n    max_txn_ops: 2\n", "store.etcd.max_txn_ops"},
		{"etcd tls pair", "store:\n  etcd:\n    endpoints: [\"https://e1:2379\"]\n    tls: {ca: /ca.pem, cert: /c.pem}\n", "store.etcd.tls: cert and key go together"},
		{"bgp as", "bgp:\n  router_id: 192.0.2.1\n  neighbors: [{address: 192.0.2.9, as: 65000}]\n", "bgp.local_as: is required"},
		{"bgp router id", "bgp:\n  local_as: 65010\n  router_id: 2001:db8::1\n  neighbors: [{address: 192.0.2.9, as: 65000}]\n", "bgp.router_id"},
		{"bgp announce", "bgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n  announce: all\n  neighbors: [{address: 192.0.2.9, as: 65000}]\n", "bgp.announce"},
		{"bgp community", "bgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n  communities: [\"65010:70000\"]\n  neighbors: [{address: 192.0.2.9, as: 65000}]\n", "bgp.communities[0]"},
		{"bgp no neighbour", "bgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n", "bgp.neighbors: at least one"},
		{"bgp neighbour as", "bgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n  neighbors: [{address: 192.0.2.9}]\n", "bgp.neighbors[0].as"},
		{"bgp neighbour twice", "bgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n  neighbors: [{address: 192.0.2.9, as: 1}, {address: 192.0.2.9, as: 1}]\n", "bgp.neighbors[1].address"},
		{"bgp restart time", "bgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n  restart_time: 5000s\n  neighbors: [{address: 192.0.2.9, as: 65000}]\n", "bgp.restart_time"},
		{"policy tep", "policy:\n  groups:\n    paris: {tep: \"tep paris\"}\n", `policy.groups["paris"].tep: "tep paris" is not a node name`},
		{"sso issuer", "sso:\n  issuer: http://idp.example\n  client_id: dstm\n", `sso.issuer: "http://idp.example" is not an https URL`},
		{"sso client", "sso:\n  issuer: https://idp.example\n", "sso.client_id: required"},
		{"sso group map", "sso:\n  issuer: https://idp.example\n  client_id: dstm\n  groups: {eng: staff}\n", `sso.groups["eng"]: policy group "staff" is not defined`},
		{"sso unknown key", "sso:\n  issuer: https://idp.example\n  client_id: dstm\n  client_secret: x\n", "client_secret"},
		{"role name", "roles: [server]\n", `roles[0]: want "control" or "tep", got "server"`},
		{"role twice", "roles: [tep, tep]\n", `roles[1]: "tep" named twice`},
		{"no role", "roles: []\n", "roles: empty"},
		{"split without etcd", "roles: [control]\n", "roles: [control] needs store.etcd"},
		{"bgp on a control node", "roles: [control]\nstore:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\nbgp:\n  local_as: 65010\n  router_id: 192.0.2.1\n  neighbors: [{address: 192.0.2.9, as: 65000}]\n", "bgp: routes are announced by the nodes with the tep role"},
		{"tep without ipv6", "roles: [tep]\nstore:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n", "tep.ipv6: required with roles [tep]"},
		{"tep inner in a pool", "roles: [tep]\ntep:\n  ipv6: 2001:db8::1\n  inner_v4: 100.64.0.1\npools:\n  - name: a\n    prefixes: [100.64.0.0/24]\nstore:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n", `tep.inner_v4: 100.64.0.1 is in pool "a"`},
		{"tep without transport", "roles: [tep]\nlisten:\n  udp: false\ntep:\n  ipv6: 2001:db8::1\nstore:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n", "a TEP node serves DTLS (listen.udp) or v4v6"},
		{"etcd password", "store:\n  etcd:\n    endpoints: [\"http://e1:2379\"]\n    username: gw\n", "store.etcd.username"},
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

func TestFieldErrorIsTyped(t *testing.T) {
	_, err := Parse([]byte("tep:\n  mtu: 1\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "tep.mtu" {
		t.Fatalf("want FieldError for tep.mtu, got %v", err)
	}
}

func TestEffectiveConfigRoundTrips(t *testing.T) {
	in := "state_dir: /tmp/x\npools:\n  - name: corp\n    prefixes: [10.9.0.0/16]\n    exclude: [10.9.0.1/32]\nleases:\n  lifetime: 2h\n"
	cfg, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"lifetime: 2h0m0s", "10.9.0.0/16", "state_dir: /tmp/x"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("effective config does not parse back: %v\n%s", err, out)
	}
	if again.Leases.Lifetime != cfg.Leases.Lifetime || again.Pools[0].Prefixes[0] != cfg.Pools[0].Prefixes[0] {
		t.Fatalf("round trip changed values")
	}
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want ByteSize
		text string
	}{
		{"2GiB", 2 << 30, "2GiB"},
		{"1536MiB", 1536 << 20, "1536MiB"},
		{"1024MiB", 1 << 30, "1GiB"},
		{"65536KiB", 64 << 20, "64MiB"},
		{"100B", 100, "100B"},
		{"0B", 0, "0B"},
	} {
		var c struct {
			S ByteSize `yaml:"s"`
		}
		if err := yaml.Unmarshal([]byte("s: "+tc.yaml), &c); err != nil || c.S != tc.want {
			t.Errorf("%s: %d, %v; want %d", tc.yaml, c.S, err, tc.want)
		}
		if c.S.String() != tc.text {
			t.Errorf("%s written as %s, want %s", tc.yaml, c.S, tc.text)
		}
	}
	for _, bad := range []string{"2G", "-1MiB", "MiB", "1.5GiB", "9999999999GiB", "[1]"} {
		var c struct {
			S ByteSize `yaml:"s"`
		}
		if err := yaml.Unmarshal([]byte("s: "+bad), &c); err == nil {
			t.Errorf("%s accepted as %d", bad, c.S)
		}
	}
}
