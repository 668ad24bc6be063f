package auth

import (
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dstmgw/dstm/auth/acl"
)

const accessYAML = `
default:
  routes: [10.0.0.0/8]
  access:
    outbound:
      - to: [10.1.0.0/16]
        proto: tcp
        ports: [80, 443]
groups:
  eng:
    access:
      outbound:
        - to: [10.0.0.0/8]
        - to: [10.2.0.0/16]
          proto: tcp
          ports: ["8000-8080"]
      inbound:
        - from: [192.0.2.0/24]
          proto: tcp
          ports: [22]
      reject: true
  staff: {}
identities:
  alice@corp.example: {groups: [staff]}
  bob@corp.example: {groups: [staff, eng]}
  carol@corp.example:
    groups: [eng]
    access: {}
tests:
  - identity: alice@corp.example
    allow: [10.1.2.3:443/tcp]
    deny: [10.9.0.1:22/tcp, 10.1.2.3/icmp]
  - groups: [eng]
    allow: [10.9.0.1:22/tcp, 10.9.0.1/icmp]
    allow_inbound: [192.0.2.7:22/tcp]
    deny_inbound: [192.0.2.7:23/tcp]
  - identity: carol@corp.example
    deny: [10.1.2.3:443/tcp]
`

func decodePolicy(t *testing.T, doc string) PolicyConfig {
	t.Helper()
	var cfg PolicyConfig
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAccessPrecedence(t *testing.T) {
	cfg := decodePolicy(t, accessYAML)
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for who, want := range map[string]string{
		"alice@corp.example":    `policy.default.access`, // staff sets no access
		"bob@corp.example":      `policy.groups["eng"].access`,
		"carol@corp.example":    `policy.identities["carol@corp.example"].access`,
		"stranger@corp.example": `policy.default.access`,
	} {
		if got := p.Access(who).Name(); got != want {
			t.Errorf("%s: access from %s, want %s", who, got, want)
		}
	}
	if p.Access("alice@corp.example") != p.Access("stranger@corp.example") {
		t.Error("identities inheriting one layer do not share its compiled rules")
	}
	if !p.Access("bob@corp.example").Reject() || p.Access("alice@corp.example").Reject() {
		t.Error("reject not taken from the deciding layer")
	}
	r, _ := p.Resolve("bob@corp.example")
	if r.Access != cfg.Groups["eng"].Access {
		t.Error("Resolve does not carry the access block")
	}
	// Round trip: the effective configuration as check-config writes it.
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if back := decodePolicy(t, string(out)); !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip through\n%s\nchanged the policy", out)
	}
}

func TestAccessNoneIsTodaysBehaviour(t *testing.T) {
	p, err := NewPolicy(PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Access("anyone@corp") != nil {
		t.Fatal("a policy without access blocks has access rules")
	}
	tg, _ := acl.ParseTarget("10.9.0.1:22/tcp")
	if e := p.Explain("anyone@corp", acl.Outbound, tg); !e.Allowed || e.Rule != "" {
		t.Fatalf("explain without rules: %+v", e)
	}
}

func TestPolicyTestsRefuse(t *testing.T) {
	cfg := decodePolicy(t, accessYAML)
	cfg.Tests = append(cfg.Tests,
		PolicyTest{Identity: "alice@corp.example", Allow: []string{"10.9.0.1:22/tcp"}},
		PolicyTest{Identity: "bob@corp.example", Deny: []string{"10.9.0.1:22/tcp"}, DenyInbound: []string{"192.0.2.7:22/tcp"}},
		PolicyTest{Groups: []string{"nope"}, Allow: []string{"10.0.0.1/icmp"}},
		PolicyTest{Identity: "alice@corp.example", Groups: []string{"eng"}},
		PolicyTest{Identity: "alice@corp.example", Allow: []string{"10.0.0.1:99999/tcp"}},
	)
	_, err := NewPolicy(cfg)
	if err == nil {
		t.Fatal("failing tests accepted")
	}
	for _, want := range []string{
		`policy.tests[3].allow[0]: test failed: alice@corp.example may not reach 10.9.0.1:22/tcp: no outbound rule of policy.default.access allows it`,
		`policy.tests[4].deny[0]: test failed: bob@corp.example may reach 10.9.0.1:22/tcp: allowed by policy.groups["eng"].access.outbound[0] (to [10.0.0.0/8] any)`,
		`policy.tests[4].deny_inbound[0]: test failed: bob@corp.example may be reached from 192.0.2.7:22/tcp: allowed by policy.groups["eng"].access.inbound[0]`,
		`policy.tests[5]: groups[0]: unknown group "nope"`,
		`policy.tests[6]: name an identity or groups, not both`,
		`policy.tests[7].allow[0]: "10.0.0.1:99999/tcp"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "tests[0]") || strings.Contains(err.Error(), "tests[1]") || strings.Contains(err.Error(), "tests[2]") {
		t.Errorf("passing tests reported:\n%v", err)
	}
}

func TestAccessValidationNamesFields(t *testing.T) {
	cfg := decodePolicy(t, `
groups:
  eng:
    access:
      outbound: [{to: [10.0.0.1/8]}]
identities:
  alice@corp:
    access:
      inbound: [{from: [192.0.2.0/24], proto: gre}]
`)
	_, err := NewPolicy(cfg)
	for _, want := range []string{
		`policy.groups["eng"].access.outbound[0].to[0]: 10.0.0.1/8 has host bits set`,
		`policy.identities["alice@corp"].access.inbound[0].proto: unknown protocol "gre"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	var bad PolicyConfig
	err = yaml.Unmarshal([]byte("default: {access: {outbound: [{to: [10.0.0.0/8], ports: [\"90-80\"]}]}}"), &bad)
	if err == nil || !strings.Contains(err.Error(), "backwards") {
		t.Errorf("backwards port range: %v", err)
	}
}

func TestExplain(t *testing.T) {
	p, err := NewPolicy(decodePolicy(t, accessYAML))
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := acl.ParseTarget("10.2.0.9:8080/tcp")
	e := p.Explain("bob@corp.example", acl.Outbound, tg)
	if !e.Allowed || e.Rule != `policy.groups["eng"].access.outbound[0]` {
		t.Fatalf("%+v", e)
	}
	e = p.Explain("carol@corp.example", acl.Outbound, tg)
	if e.Allowed || e.Access != `policy.identities["carol@corp.example"].access` {
		t.Fatalf("%+v", e)
	}
}

func TestAccessWarnings(t *testing.T) {
	cfg := decodePolicy(t, accessYAML)
	cfg.Groups["eng"].Access.Outbound = append(cfg.Groups["eng"].Access.Outbound,
		acl.Rule{To: prefixes("172.16.0.0/12")})
	cfg.Identities["dave@corp.example"] = IdentityRule{Rule: Rule{Routes: prefixes("10.0.0.0/8", "172.16.0.0/12"), Access: &acl.Access{}}}
	cfg.Groups["split"] = Rule{Routes: prefixes("192.168.0.0/16")}
	cfg.Identities["erin@corp.example"] = IdentityRule{Groups: []string{"split"}}
	cfg.Default.Access = nil
	cfg.Tests = nil
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range p.Warnings(cfg) {
		got = append(got, w.Field+": "+w.Text)
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`policy.groups["eng"].access.outbound[1]: never decides: outbound[0] (to [10.0.0.0/8] any) already allows all of it`,
		`policy.default: split routes [10.0.0.0/8] without access rules`,
		`policy.identities["erin@corp.example"]: split routes [192.168.0.0/16] without access rules`,
		`policy.groups["eng"].access.outbound[2].to[0]: outside the routes pushed to bob@corp.example [10.0.0.0/8]`,
		`route 10.0.0.0/8 pushed to dave@corp.example: no outbound rule of policy.identities["dave@corp.example"].access allows any of it`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
}
