package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// precedenceConfig exercises every layer of the precedence.
func precedenceConfig() PolicyConfig {
	return PolicyConfig{
		Default: Rule{Pool: "main", Transports: []string{"v4dtlsv6"}, DNS: addrs("192.0.2.53"), DNSDomains: []string{"corp.example"}, MaxSessions: 1},
		Groups: map[string]Rule{
			"staff":   {Pool: "staff", Routes: prefixes("10.0.0.0/8"), DNSDomains: []string{"~staff.corp.example"}, MaxSessions: 3},
			"legacy":  {Pool: "legacy", Transports: []string{"v4v6"}, DNS: addrs("2001:db8::53")},
			"fulltun": {Routes: prefixes("0.0.0.0/0")},
		},
		Identities: map[string]IdentityRule{
			"alice@corp": {Groups: []string{"staff", "legacy"}, Rule: Rule{StaticV4: netip.MustParseAddr("100.64.0.10")}},
			"bob@corp":   {Groups: []string{"legacy", "staff"}, Rule: Rule{MaxSessions: -1}},
			"carol@corp": {Groups: []string{"fulltun", "staff"}, Rule: Rule{Pool: "vip", Transports: []string{"V4ANYV6"}, DNSDomains: []string{"~."}}},
			"dave@corp":  {},
		},
	}
}

func TestPolicyPrecedence(t *testing.T) {
	p, err := NewPolicy(precedenceConfig())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		identity string
		want     Rule
	}{
		{"alice@corp", Rule{Pool: "staff", StaticV4: netip.MustParseAddr("100.64.0.10"), Transports: []string{"v4v6"},
			Routes: prefixes("10.0.0.0/8"), DNS: addrs("2001:db8::53"), DNSDomains: []string{"~staff.corp.example"}, MaxSessions: 3}},
		{"bob@corp", Rule{Pool: "legacy", Transports: []string{"v4v6"}, Routes: prefixes("10.0.0.0/8"),
			DNS: addrs("2001:db8::53"), DNSDomains: []string{"~staff.corp.example"}, MaxSessions: 0}},
		{"carol@corp", Rule{Pool: "vip", Transports: []string{"v4anyv6", "v4dtlsv6", "v4tlsv6"},
			DNS: addrs("192.0.2.53"), DNSDomains: []string{"~."}, MaxSessions: 3}},
		{"dave@corp", Rule{Pool: "main", Transports: []string{"v4dtlsv6"}, DNS: addrs("192.0.2.53"), DNSDomains: []string{"corp.example"}, MaxSessions: 1}},
		{"stranger@corp", Rule{Pool: "main", Transports: []string{"v4dtlsv6"}, DNS: addrs("192.0.2.53"), DNSDomains: []string{"corp.example"}, MaxSessions: 1}},
	}
	for _, tc := range tests {
		got, err := p.Resolve(tc.identity)
		if err != nil {
			t.Errorf("Resolve(%q): %v", tc.identity, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Resolve(%q)\n got %+v\nwant %+v", tc.identity, got, tc.want)
		}
	}
}

func TestPolicyResolveDefaultsAndRefusal(t *testing.T) {
	p, err := NewPolicy(PolicyConfig{Unknown: UnknownRefuse, Identities: map[string]IdentityRule{"alice@corp": {}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Resolve("alice@corp")
	if err != nil {
		t.Fatal(err)
	}
	want := Rule{Transports: []string{"v4anyv6", "v4dtlsv6", "v4tlsv6"}}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("built-in default = %+v, want %+v", r, want)
	}
	if _, err := p.Resolve("bob@corp"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("unknown with refuse: err = %v", err)
	}
	if _, err := p.Resolve("bad name"); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("invalid identity: err = %v", err)
	}
	// The caller may modify what it got without affecting the policy.
	r.Transports[0] = "mutated"
	if again, _ := p.Resolve("alice@corp"); again.Transports[0] != "v4anyv6" {
		t.Errorf("Resolve returned shared slices")
	}
}

func TestAllowsTransport(t *testing.T) {
	p, _ := NewPolicy(PolicyConfig{})
	tests := []struct {
		rule []string
		t    string
		want bool
	}{
		{[]string{"v4v6"}, "v4v6", true},
		{[]string{"v4v6"}, "V4V6", true},
		{[]string{"v4v6"}, "v4dtlsv6", false},
		{[]string{"v4v6"}, "v4anyv6", false},
		{[]string{"v4dtlsv6"}, "v4anyv6", true},
		{[]string{"v4tlsv6"}, "v4anyv6", true},
		{[]string{"v4tlsv6"}, "v4dtlsv6", false},
		{[]string{"v4anyv6"}, "v4dtlsv6", true},
		{[]string{"v4anyv6"}, "v4tlsv6", true},
		{[]string{"v4anyv6"}, "v4v6", false},
		{[]string{"v4anyv6"}, "bogus", false},
	}
	for _, tc := range tests {
		pol, err := NewPolicy(PolicyConfig{Default: Rule{Transports: tc.rule}})
		if err != nil {
			t.Fatal(err)
		}
		rule, _ := pol.Resolve("x@corp")
		if got := p.AllowsTransport(rule, tc.t); got != tc.want {
			t.Errorf("rule %v allows %q = %v, want %v", tc.rule, tc.t, got, tc.want)
		}
	}
}

func TestPolicyValidation(t *testing.T) {
	static := func(s string) Rule { return Rule{StaticV4: netip.MustParseAddr(s)} }
	tests := []struct {
		name string
		cfg  PolicyConfig
		want []string // substrings, all must appear
	}{
		{"bad unknown", PolicyConfig{Unknown: "maybe"}, []string{`policy.unknown: must be "default" or "refuse", got "maybe"`}},
		{"static in default", PolicyConfig{Default: static("100.64.0.1")}, []string{"policy.default.static_v4: 100.64.0.1: static addresses belong to one identity"}},
		{"static in group", PolicyConfig{Groups: map[string]Rule{"g": static("100.64.0.1")}}, []string{`policy.groups["g"].static_v4:`}},
		{"duplicate static", PolicyConfig{Identities: map[string]IdentityRule{
			"alice@corp": {Rule: static("100.64.0.9")}, "bob@corp": {Rule: static("100.64.0.9")}}},
			[]string{`policy.identities["bob@corp"].static_v4: 100.64.0.9 is already reserved for "alice@corp"`}},
		{"IPv6 static", PolicyConfig{Identities: map[string]IdentityRule{"a": {Rule: static("2001:db8::1")}}},
			[]string{`policy.identities["a"].static_v4: 2001:db8::1 is not an IPv4 address`}},
		{"multicast static", PolicyConfig{Identities: map[string]IdentityRule{"a": {Rule: static("224.0.0.1")}}}, []string{"not a unicast address"}},
		{"broadcast static", PolicyConfig{Identities: map[string]IdentityRule{"a": {Rule: static("255.255.255.255")}}}, []string{"not a unicast address"}},
		{"unknown transport", PolicyConfig{Default: Rule{Transports: []string{"v4dtlsv6", "v4udpv6"}}},
			[]string{`policy.default.transports[1]: unknown tunnel type "v4udpv6"`}},
		{"route host bits", PolicyConfig{Default: Rule{Routes: prefixes("10.1.2.3/8")}},
			[]string{"policy.default.routes[0]: 10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"}},
		{"IPv6 route", PolicyConfig{Default: Rule{Routes: prefixes("2001:db8::/32")}}, []string{"routes[0]: 2001:db8::/32 is not an IPv4 prefix"}},
		{"full tunnel mixed", PolicyConfig{Default: Rule{Routes: prefixes("10.0.0.0/8", "0.0.0.0/0")}}, []string{"routes[1]: 0.0.0.0/0 means full tunnel"}},
		{"duplicate route", PolicyConfig{Default: Rule{Routes: prefixes("10.0.0.0/8", "10.0.0.0/8")}}, []string{"routes[1]: 10.0.0.0/8 listed twice"}},
		{"invalid route", PolicyConfig{Default: Rule{Routes: []netip.Prefix{{}}}}, []string{"routes[0]: invalid prefix"}},
		{"bad dns", PolicyConfig{Default: Rule{DNS: []netip.Addr{{}, netip.MustParseAddr("0.0.0.0")}}},
			[]string{"dns[0]: invalid address", "dns[1]: 0.0.0.0 is not a unicast address"}},
		{"bad dns domains", PolicyConfig{Groups: map[string]Rule{"g": {DNSDomains: []string{"corp.example.", "~", "a b", "corp.example", "CORP.example"}}}},
			[]string{`policy.groups["g"].dns_domains[0]: domain "corp.example.": no trailing dot`, `policy.groups["g"].dns_domains[1]: empty domain`,
				`policy.groups["g"].dns_domains[2]: domain "a b"`, `policy.groups["g"].dns_domains[4]: "CORP.example" listed twice`}},
		{"too many dns domains", PolicyConfig{Default: Rule{DNSDomains: strings.Split("a,b,c,d,e,f,g,h,i", ",")}},
			[]string{"policy.default.dns_domains: 9 domains: at most 8"}},
		{"max sessions", PolicyConfig{Groups: map[string]Rule{"g": {MaxSessions: -2}}}, []string{`policy.groups["g"].max_sessions: must be -1`}},
		{"unknown group", PolicyConfig{Identities: map[string]IdentityRule{"a": {Groups: []string{"nope"}}}},
			[]string{`policy.identities["a"].groups[0]: unknown group "nope"`}},
		{"group twice", PolicyConfig{Groups: map[string]Rule{"g": {}}, Identities: map[string]IdentityRule{"a": {Groups: []string{"g", "g"}}}},
			[]string{`policy.identities["a"].groups[1]: group "g" listed twice`}},
		{"bad identity name", PolicyConfig{Identities: map[string]IdentityRule{"al ice": {}}}, []string{`policy.identities["al ice"]: auth: invalid identity`}},
		{"bad group name", PolicyConfig{Groups: map[string]Rule{"": {}}}, []string{`policy.groups[""]: invalid group name`}},
		{"bad pool name", PolicyConfig{Default: Rule{Pool: "my pool"}}, []string{"policy.default.pool: invalid name"}},
		{"all problems reported", PolicyConfig{Unknown: "x", Default: Rule{MaxSessions: -5, Transports: []string{"y"}}},
			[]string{"policy.unknown", "policy.default.transports[0]", "policy.default.max_sessions"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPolicy(tc.cfg)
			if err == nil {
				t.Fatalf("NewPolicy accepted %+v", tc.cfg)
			}
			if p != nil {
				t.Errorf("NewPolicy returned a policy with an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestPolicyReservationsAndFullTunnelOverride(t *testing.T) {
	p, err := NewPolicy(precedenceConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]netip.Addr{"alice@corp": netip.MustParseAddr("100.64.0.10")}
	if got := p.Reservations(); !reflect.DeepEqual(got, want) {
		t.Errorf("Reservations = %v, want %v", got, want)
	}
	// carol's first group forces full tunnel over staff's split routes.
	if r, _ := p.Resolve("carol@corp"); len(r.Routes) != 0 {
		t.Errorf("carol routes = %v, want full tunnel", r.Routes)
	}
}

func TestCheckPools(t *testing.T) {
	p, err := NewPolicy(precedenceConfig())
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]netip.Prefix{"main": netip.MustParsePrefix("100.64.0.0/24"), "staff": netip.MustParsePrefix("100.65.0.0/24"), "legacy": netip.MustParsePrefix("100.66.0.0/24")}
	err = p.CheckPools(func(pool string, static netip.Addr) error {
		pfx, ok := known[pool]
		switch {
		case pool == "":
			return nil
		case !ok:
			return fmt.Errorf("no pool %q", pool)
		case static.IsValid() && !pfx.Contains(static):
			return fmt.Errorf("%s outside pool %q", static, pool)
		}
		return nil
	})
	for _, w := range []string{
		`policy.identities["alice@corp"]: 100.64.0.10 outside pool "staff"`,
		`policy.identities["carol@corp"]: no pool "vip"`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("CheckPools error %v lacks %q", err, w)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 2 {
		t.Errorf("CheckPools reported %d problems, want 2:\n%v", n, err)
	}
}

const policyYAML = `
default:
  pool: main
  transports: [v4dtlsv6, v4tlsv6]
  routes: [10.0.0.0/8, 192.168.0.0/16]
  dns: [192.0.2.53, "2001:db8::53"]
  dns_domains: [corp.example, "~lab.corp.example"]
  max_sessions: 2
unknown: refuse
groups:
  legacy:
    transports: [v4v6]
identities:
  alice@corp:
    groups: [legacy]
    static_v4: 100.64.0.10
    max_sessions: -1
`

func TestPolicyYAML(t *testing.T) {
	var cfg PolicyConfig
	dec := yaml.NewDecoder(strings.NewReader(policyYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	want := PolicyConfig{
		Default: Rule{Pool: "main", Transports: []string{"v4dtlsv6", "v4tlsv6"}, Routes: prefixes("10.0.0.0/8", "192.168.0.0/16"),
			DNS: addrs("192.0.2.53", "2001:db8::53"), DNSDomains: []string{"corp.example", "~lab.corp.example"}, MaxSessions: 2},
		Unknown: "refuse",
		Groups:  map[string]Rule{"legacy": {Transports: []string{"v4v6"}}},
		Identities: map[string]IdentityRule{"alice@corp": {Groups: []string{"legacy"},
			Rule: Rule{StaticV4: netip.MustParseAddr("100.64.0.10"), MaxSessions: -1}}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", cfg, want)
	}
	if _, err := NewPolicy(cfg); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "static_v4"); n != 1 {
		t.Errorf("marshalled config has %d static_v4 keys, want 1 (zero ones omitted):\n%s", n, out)
	}
	var back PolicyConfig
	if err := yaml.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(back, want) {
		t.Fatalf("round trip through\n%s\ngave %+v, %v", out, back, err)
	}
}

func TestPolicyYAMLErrors(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"default: {static_v4: 10.0.0.300}", "ParseAddr"},
		{"default: {routes: [10.0.0.0/33]}", "netip.ParsePrefix"},
		{"default: {dns: [not-an-ip]}", "ParseAddr"},
		{"default: {pools: main}", "field pools not found"},
	}
	for _, tc := range tests {
		var cfg PolicyConfig
		dec := yaml.NewDecoder(strings.NewReader(tc.doc))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.doc, err, tc.want)
		}
	}
}

func TestPolicyHolder(t *testing.T) {
	a, _ := NewPolicy(PolicyConfig{Default: Rule{Pool: "a"}})
	b, _ := NewPolicy(PolicyConfig{Default: Rule{Pool: "b"}})
	h := NewPolicyHolder(a)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			if r, err := h.Resolve("x@corp"); err != nil || (r.Pool != "a" && r.Pool != "b") {
				t.Errorf("concurrent Resolve = %+v, %v", r, err)
				return
			}
		}
	}()
	for i := range 1000 {
		h.Store([]*Policy{a, b}[i%2])
	}
	<-done
	h.Store(b)
	if h.Load() != b {
		t.Fatal("Load did not return the stored policy")
	}
}

func BenchmarkResolve(b *testing.B) {
	p, err := NewPolicy(precedenceConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Resolve("alice@corp"); err != nil {
			b.Fatal(err)
		}
	}
}
