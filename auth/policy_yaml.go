package auth

import (
	"net/netip"

	"github.com/dstmgw/dstm/auth/acl"
)

// ruleYAML is how a Rule is written out: netip.Addr has no exported fields,
// so yaml's omitempty cannot see that a zero StaticV4 is empty; a pointer can.
type ruleYAML struct {
	Pool        string         `yaml:"pool,omitempty"`
	StaticV4    *netip.Addr    `yaml:"static_v4,omitempty"`
	Transports  []string       `yaml:"transports,omitempty"`
	Routes      []netip.Prefix `yaml:"routes,omitempty"`
	DNS         []netip.Addr   `yaml:"dns,omitempty"`
	DNSDomains  []string       `yaml:"dns_domains,omitempty"`
	MaxSessions int            `yaml:"max_sessions,omitempty"`
	TEP         string         `yaml:"tep,omitempty"`
	Access      *acl.Access    `yaml:"access,omitempty"`
}

type identityRuleYAML struct {
	Groups []string `yaml:"groups,omitempty"`
	Rule   ruleYAML `yaml:",inline"`
}

func (r Rule) toYAML() ruleYAML {
	out := ruleYAML{Pool: r.Pool, Transports: r.Transports, Routes: r.Routes, DNS: r.DNS, DNSDomains: r.DNSDomains, MaxSessions: r.MaxSessions, TEP: r.TEP, Access: r.Access}
	if r.StaticV4.IsValid() {
		out.StaticV4 = &r.StaticV4
	}
	return out
}

// MarshalYAML writes the rule with the same keys it is read with, leaving
// out zero fields (for `check-config` output).
func (r Rule) MarshalYAML() (any, error) { return r.toYAML(), nil }

// MarshalYAML writes the identity rule flat, as it is read.
func (ir IdentityRule) MarshalYAML() (any, error) {
	return identityRuleYAML{Groups: ir.Groups, Rule: ir.Rule.toYAML()}, nil
}
