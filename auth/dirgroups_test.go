package auth

import (
	"errors"
	"net/netip"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestResolveWithDirectoryGroups: groups from a certificate join after the
// identity's listed groups; unknown groups are ignored; a policy refusing
// unknown identities admits one the directory puts in a defined group.
func TestResolveWithDirectoryGroups(t *testing.T) {
	var cfg PolicyConfig
	err := yaml.Unmarshal([]byte(`
unknown: refuse
default: {pool: main, routes: [10.0.0.0/8]}
groups:
  staff: {pool: staff, access: {outbound: [{to: [10.1.0.0/16]}]}}
  sales: {routes: [10.2.0.0/16], access: {outbound: [{to: [10.2.0.0/16]}]}}
identities:
  alice@corp: {groups: [sales], static_v4: 100.64.0.10}
  root@corp: {access: {outbound: [{to: [0.0.0.0/0]}]}}
`), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pools = map[string][]netip.Prefix{"main": {netip.MustParsePrefix("100.64.0.0/24")}, "staff": {netip.MustParsePrefix("100.65.0.0/24")}}
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, id string
		groups   []string
		wantErr  error
		pool     string
		route    string
		access   string // name of the access Set
	}{
		{name: "unlisted, no groups", id: "bob@corp", wantErr: ErrNotAllowed},
		{name: "unlisted, unknown group only", id: "bob@corp", groups: []string{"ghosts"}, wantErr: ErrNotAllowed},
		{name: "unlisted, directory staff", id: "bob@corp", groups: []string{"ghosts", "staff"}, pool: "staff", route: "10.0.0.0/8", access: `policy.groups["staff"].access`},
		{name: "listed groups first", id: "alice@corp", groups: []string{"staff"}, pool: "staff", route: "10.2.0.0/16", access: `policy.groups["sales"].access`},
		{name: "own access wins", id: "root@corp", groups: []string{"staff"}, pool: "staff", route: "10.0.0.0/8", access: `policy.identities["root@corp"].access`},
		{name: "listed, no groups", id: "alice@corp", pool: "main", route: "10.2.0.0/16", access: `policy.groups["sales"].access`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := p.ResolveWith(tc.id, tc.groups)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Pool != tc.pool || len(r.Routes) == 0 || r.Routes[0].String() != tc.route {
				t.Fatalf("rule %+v", r)
			}
			if s := p.AccessWith(tc.id, tc.groups); s == nil || s.Name() != tc.access {
				t.Fatalf("access %v, want %s", s, tc.access)
			}
		})
	}
	if r, _ := p.ResolveWith("alice@corp", []string{"staff"}); r.StaticV4 != netip.MustParseAddr("100.64.0.10") {
		t.Fatalf("static_v4 lost: %+v", r)
	}
}
