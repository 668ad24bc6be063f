package acl

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	a := &Access{
		Outbound: []Rule{
			{To: pfx("10.1.0.0/16"), Proto: ProtoTCP, Ports: []PortRange{{80, 80}, {443, 443}}},
			{To: pfx("10.1.2.0/24"), Proto: ProtoUDP, Ports: []PortRange{{53, 53}}},
			{To: pfx("10.1.2.3/32"), Proto: ProtoAny},
			{To: pfx("192.0.2.0/24", "198.51.100.0/24"), Proto: ProtoICMP},
			{To: pfx("0.0.0.0/0"), Proto: ProtoTCP, Ports: []PortRange{{8000, 8080}}},
			{To: pfx("203.0.113.0/24"), Ports: []PortRange{{123, 123}}},
		},
		Inbound: []Rule{{From: pfx("198.51.100.7/32"), Proto: ProtoTCP, Ports: []PortRange{{22, 22}}}},
	}
	s, err := Compile("policy.default.access", a)
	if err != nil {
		t.Fatal(err)
	}
	lease := "100.64.0.2"
	tests := []struct {
		name string
		d    Dir
		f    *Flow
		want int32
	}{
		{"tcp 443 in 10.1/16", Outbound, flow(ipTCP, lease, "10.1.9.9", 40000, 443), 0},
		{"tcp 80 in 10.1/16", Outbound, flow(ipTCP, lease, "10.1.0.0", 40000, 80), 0},
		{"tcp 22 not allowed", Outbound, flow(ipTCP, lease, "10.1.9.9", 40000, 22), NoRule},
		{"tcp 81 not allowed", Outbound, flow(ipTCP, lease, "10.1.9.9", 40000, 81), NoRule},
		{"udp 53 in 10.1.2/24", Outbound, flow(ipUDP, lease, "10.1.2.200", 40000, 53), 1},
		{"udp 53 outside 10.1.2/24", Outbound, flow(ipUDP, lease, "10.1.3.1", 40000, 53), NoRule},
		{"any to the host, tcp", Outbound, flow(ipTCP, lease, "10.1.2.3", 40000, 22), 2},
		{"earlier rule wins on the host", Outbound, flow(ipTCP, lease, "10.1.2.3", 40000, 443), 0},
		{"any to the host, icmp", Outbound, flow(ipICMP, lease, "10.1.2.3", 8, 7), 2},
		{"icmp second prefix", Outbound, flow(ipICMP, lease, "198.51.100.255", 8, 7), 3},
		{"icmp elsewhere", Outbound, flow(ipICMP, lease, "8.8.8.8", 8, 7), NoRule},
		{"tcp 8000-8080 anywhere", Outbound, flow(ipTCP, lease, "255.255.255.255", 1, 8080), 4},
		{"tcp 8081", Outbound, flow(ipTCP, lease, "8.8.8.8", 1, 8081), NoRule},
		{"ports with proto any: udp", Outbound, flow(ipUDP, lease, "203.0.113.9", 1, 123), 5},
		{"ports with proto any: tcp", Outbound, flow(ipTCP, lease, "203.0.113.9", 1, 123), 5},
		{"ports with proto any: not icmp", Outbound, flow(ipICMP, lease, "203.0.113.9", 8, 123), NoRule},
		{"inbound ssh from the admin host", Inbound, flow(ipTCP, "198.51.100.7", lease, 50000, 22), 0},
		{"inbound ssh from elsewhere", Inbound, flow(ipTCP, "198.51.100.8", lease, 50000, 22), NoRule},
		{"inbound uses the source, not the destination", Inbound, flow(ipTCP, lease, "198.51.100.7", 50000, 22), NoRule},
		{"other protocol", Outbound, &Flow{Proto: 47, Dst: a4("10.1.2.3")}, 2},
		{"other protocol elsewhere", Outbound, &Flow{Proto: 47, Dst: a4("10.1.2.4")}, NoRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.Match(tt.d, tt.f); got != tt.want {
				t.Fatalf("Match = %d, want %d", got, tt.want)
			}
			if ref := naive(s.cfg.rules(tt.d), tt.d, tt.f); ref != tt.want {
				t.Fatalf("naive = %d, want %d (test is wrong)", ref, tt.want)
			}
		})
	}
}

func (a Access) rules(d Dir) []Rule {
	if d == Inbound {
		return a.Inbound
	}
	return a.Outbound
}

func TestCompileErrorsNameFields(t *testing.T) {
	bad := &Access{
		Outbound: []Rule{
			{To: pfx("10.0.0.1/8")},
			{From: pfx("10.0.0.0/8"), To: pfx("10.0.0.0/8")},
			{To: pfx("10.0.0.0/8"), Proto: "sctp"},
			{To: pfx("10.0.0.0/8"), Proto: ProtoICMP, Ports: []PortRange{{1, 1}}},
			{Proto: ProtoTCP},
			{To: pfx("2001:db8::/32")},
			{To: pfx("10.0.0.0/8", "10.0.0.0/8")},
			{To: pfx("10.0.0.0/8"), Ports: []PortRange{{0, 5}}},
		},
		Inbound: []Rule{{To: pfx("10.0.0.0/8")}},
	}
	_, err := Compile("policy.default.access", bad)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"policy.default.access.outbound[0].to[0]: 10.0.0.1/8 has host bits set",
		"policy.default.access.outbound[1]: outbound rules name their peers with \"to\"",
		"policy.default.access.outbound[2].proto: unknown protocol \"sctp\"",
		"policy.default.access.outbound[3].ports: icmp has no ports",
		"policy.default.access.outbound[4].to: at least one prefix",
		"policy.default.access.outbound[5].to[0]: 2001:db8::/32 is not an IPv4 prefix",
		"policy.default.access.outbound[6].to[1]: 10.0.0.0/8 listed twice",
		"policy.default.access.outbound[7].ports[0]: bad port range 0-5",
		"policy.default.access.inbound[0]: inbound rules name their peers with \"from\"",
		"policy.default.access.inbound[0].from: at least one prefix",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestCompileNil(t *testing.T) {
	s, err := Compile("x", nil)
	if s != nil || err != nil {
		t.Fatalf("Compile(nil) = %v, %v", s, err)
	}
}

func TestEmptyAccessAllowsNothing(t *testing.T) {
	s, err := Compile("x", &Access{})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Match(Outbound, flow(ipTCP, "100.64.0.2", "10.0.0.1", 1, 80)); r != NoRule {
		t.Fatalf("empty access allowed rule %d", r)
	}
}

// randomRules draws rules over a small address space so that they overlap.
func randomRules(rng *rand.Rand, n int, d Dir) []Rule {
	protos := []string{"", ProtoAny, ProtoTCP, ProtoUDP, ProtoICMP}
	rules := make([]Rule, n)
	for i := range rules {
		var nets []netip.Prefix
		for range 1 + rng.IntN(2) {
			bits := 8 + rng.IntN(25)
			a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(8))})
			p := netip.PrefixFrom(a, bits).Masked()
			if rng.IntN(20) == 0 {
				p = netip.MustParsePrefix("0.0.0.0/0")
			}
			if !contains(nets, p) {
				nets = append(nets, p)
			}
		}
		r := Rule{Proto: protos[rng.IntN(len(protos))]}
		if d == Inbound {
			r.From = nets
		} else {
			r.To = nets
		}
		if r.Proto != ProtoICMP && rng.IntN(2) == 0 {
			for range 1 + rng.IntN(3) {
				lo := uint16(1 + rng.IntN(100))
				r.Ports = append(r.Ports, PortRange{lo, lo + uint16(rng.IntN(20))})
			}
		}
		rules[i] = r
	}
	return rules
}

func contains(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

func randomFlow(rng *rand.Rand) *Flow {
	f := &Flow{Proto: []uint8{ipTCP, ipUDP, ipICMP, 47}[rng.IntN(4)]}
	f.Src = [4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(256))}
	f.Dst = [4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(256))}
	if rng.IntN(10) == 0 {
		f.Dst = [4]byte{byte(rng.Uint32()), byte(rng.Uint32()), 0, 1}
	}
	if f.Proto == ipTCP || f.Proto == ipUDP {
		f.SrcPort, f.DstPort = uint16(rng.IntN(130)), uint16(rng.IntN(130))
	}
	return f
}

// TestMatchDifferential compares the compiled matcher with the naive one on
// random, overlapping rules.
func TestMatchDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		d := Dir(round % 2)
		a := &Access{}
		rules := randomRules(rng, 1+rng.IntN(30), d)
		if d == Inbound {
			a.Inbound = rules
		} else {
			a.Outbound = rules
		}
		s, err := Compile("r", a)
		if err != nil {
			t.Fatal(err)
		}
		for range 500 {
			f := randomFlow(rng)
			if got, want := s.Match(d, f), naive(rules, d, f); got != want {
				t.Fatalf("round %d: %s %+v: Match = %d, naive = %d\nrules: %+v", round, d, f, got, want, rules)
			}
		}
	}
}

func TestMatchNoAllocs(t *testing.T) {
	s, err := Compile("x", &Access{Outbound: randomRules(rand.New(rand.NewPCG(3, 4)), 100, Outbound)})
	if err != nil {
		t.Fatal(err)
	}
	f := flow(ipTCP, "100.64.0.2", "10.1.2.3", 1000, 50)
	if n := testing.AllocsPerRun(1000, func() { s.Match(Outbound, f) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}

func TestParsePortRange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want PortRange
		err  bool
	}{
		{"443", PortRange{443, 443}, false},
		{"8000-8080", PortRange{8000, 8080}, false},
		{" 1 - 65535 ", PortRange{1, 65535}, false},
		{"0", PortRange{}, true},
		{"65536", PortRange{}, true},
		{"80-79", PortRange{}, true},
		{"080", PortRange{}, true},
		{"-5", PortRange{}, true},
		{"1-", PortRange{}, true},
		{"a", PortRange{}, true},
		{"+5", PortRange{}, true},
	} {
		got, err := ParsePortRange(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParsePortRange(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestCompileWithPools(t *testing.T) {
	pools := func(name string) ([]netip.Prefix, bool) {
		switch name {
		case "ops":
			return pfx("100.64.1.0/24", "100.64.9.0/30"), true
		case "staff":
			return pfx("100.64.0.0/24"), true
		}
		return nil, false
	}
	a := &Access{Outbound: []Rule{{To: pfx("100.64.1.0/24"), ToPools: []string{"ops"}, Proto: ProtoTCP, Ports: []PortRange{{22, 22}}}},
		Inbound: []Rule{{FromPools: []string{"staff"}}}}
	s, err := CompileWith("b", a, pools)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Match(Outbound, flow(ipTCP, "100.64.0.2", "100.64.9.3", 1, 22)); r != 0 {
		t.Fatalf("pool's second prefix: rule %d", r)
	}
	if r := s.Match(Inbound, flow(ipTCP, "100.64.0.7", "100.64.1.2", 1, 80)); r != 0 {
		t.Fatalf("inbound from the staff pool: rule %d", r)
	}
	if got := s.Rule(Outbound, 0).To; len(got) != 2 || len(a.Outbound[0].To) != 1 {
		t.Fatalf("resolved %v (duplicates kept, or the configuration changed: %v)", got, a.Outbound[0].To)
	}
	if _, err := Compile("b", a); err == nil || !strings.Contains(err.Error(), `b.outbound[0].to_pools[0]: unknown pool "ops"`) {
		t.Fatalf("pools without a resolver: %v", err)
	}
	bad := &Access{Outbound: []Rule{{ToPools: []string{"ops", "ops"}}, {FromPools: []string{"ops"}}}}
	_, err = CompileWith("b", bad, pools)
	for _, want := range []string{`b.outbound[0].to_pools[1]: empty or repeated pool name "ops"`, `b.outbound[1]: outbound rules name their peers with "to" or "to_pools"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
