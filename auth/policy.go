package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/dstmgw/dstm/auth/acl"
)

// Tunnel types (transports) a Rule may allow, as named in TSP capabilities
// (lower case here; AllowsTransport compares case-insensitively).
const (
	TransportV4V6     = "v4v6"     // plain IPv4-in-IPv6 (IP protocol 4)
	TransportV4DTLSV6 = "v4dtlsv6" // IPv4 in DTLS over UDP over IPv6
	TransportV4TLSV6  = "v4tlsv6"  // IPv4 in the TSP-SSL TLS stream
	TransportV4AnyV6  = "v4anyv6"  // DTLS with TLS fallback
)

// Values of PolicyConfig.Unknown.
const (
	UnknownDefault = "default" // unknown identities get the default rule
	UnknownRefuse  = "refuse"  // unknown identities are refused with ErrNotAllowed
)

// Rule is the policy for one identity. In configuration every zero field
// means "inherit"; in a resolved Rule (from Policy.Resolve) the fields mean:
//
//   - Pool: the lease pool name; "" means the gateway's default pool.
//   - StaticV4: the identity's reserved address; zero means none.
//   - Transports: the allowed tunnel types, lower case, sorted, never empty
//     after resolution (if nothing is configured: v4anyv6, v4dtlsv6, v4tlsv6;
//     plain v4v6 must be allowed explicitly).
//   - Routes: pushed IPv4 prefixes (split tunnel); empty means full tunnel. In
//     configuration, the single route 0.0.0.0/0 means "full tunnel" and is how
//     an identity or group overrides an inherited split-tunnel list; it
//     resolves to an empty list.
//   - DNS: pushed DNS servers (IPv4 or IPv6).
//   - DNSDomains: pushed DNS domains: search domains, or routing-only ones
//     prefixed "~" ("~." sends every name to the pushed servers); see
//     internal/dnsname.
//   - MaxSessions: concurrent sessions per identity; 0 means unlimited. In
//     configuration -1 means "unlimited" and overrides an inherited limit.
//   - TEP: with TEPs on their own nodes, the TEP node (by name) to carry the
//     sessions while it is up; "" means the least loaded one.
//   - Access: the access rules the TEP enforces (package acl); nil means no
//     access control. Inherited as a whole: the first layer that sets it
//     decides, its outbound and inbound lists together. Shared, not copied:
//     treat it as read-only.
type Rule struct {
	Pool        string         `yaml:"pool,omitempty"`
	StaticV4    netip.Addr     `yaml:"static_v4"`
	Transports  []string       `yaml:"transports,omitempty"`
	Routes      []netip.Prefix `yaml:"routes,omitempty"`
	DNS         []netip.Addr   `yaml:"dns,omitempty"`
	DNSDomains  []string       `yaml:"dns_domains,omitempty"`
	MaxSessions int            `yaml:"max_sessions,omitempty"`
	TEP         string         `yaml:"tep,omitempty"`
	Access      *acl.Access    `yaml:"access,omitempty"`
}

// IdentityRule is the configuration of one identity: the groups it belongs
// to and its own rule fields (zero = inherit).
type IdentityRule struct {
	Groups []string `yaml:"groups,omitempty"`
	Rule   `yaml:",inline"`
}

// PolicyConfig is the policy section of the gateway configuration.
//
// Precedence, per field: a non-zero field of the identity's own rule wins;
// otherwise the first group listed on the identity entry that sets the field;
// otherwise the default rule; otherwise the built-in default described on
// Rule. Identities not listed in Identities get the Default rule when Unknown
// is "default" (or empty) and are refused when it is "refuse". StaticV4 may
// only be set on identities, and no two identities may share one.
type PolicyConfig struct {
	Default    Rule                    `yaml:"default"`
	Unknown    string                  `yaml:"unknown,omitempty"`
	Groups     map[string]Rule         `yaml:"groups,omitempty"`
	Identities map[string]IdentityRule `yaml:"identities,omitempty"`
	// Tests are checked by NewPolicy: a policy whose tests fail is refused
	// (check-config, start and reload alike).
	Tests []PolicyTest `yaml:"tests,omitempty"`
	// Pools maps lease pool names to their prefixes, for access rules that
	// name pools (to_pools, from_pools). It is not read from the policy
	// section: the gateway configuration fills it from its pools.
	Pools map[string][]netip.Prefix `yaml:"-"`
}

// Policy is a validated, immutable policy. It is safe for concurrent use.
type Policy struct {
	refuseUnknown bool
	defaultRule   Rule
	identities    map[string]Rule   // fully resolved
	groupPools    map[string]string // group → configured pool
	// compiled access rules: one Set per layer that sets access, shared by
	// every identity that inherits it
	defaultAccess  *acl.Set
	groupAccess    map[string]*acl.Set
	identityAccess map[string]*acl.Set
	groups         map[string][]string // identity → its groups
	// the configured layers, for identities with groups from the
	// directory (ResolveWith)
	defaultCfg    Rule
	groupRules    map[string]Rule
	identityRules map[string]Rule
	ownAccess     map[string]*acl.Set // identities whose own rule sets access
}

// NewPolicy validates cfg completely and returns the policy. The error joins
// every problem found; each names its field, e.g.
// `policy.identities["alice@corp"].static_v4: ...`.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	if err := validatePolicy(cfg); err != nil {
		return nil, err
	}
	p := &Policy{
		refuseUnknown: cfg.Unknown == UnknownRefuse,
		defaultRule:   finish(cfg.Default),
		identities:    make(map[string]Rule, len(cfg.Identities)),
		groupPools:    make(map[string]string, len(cfg.Groups)),
		defaultCfg:    cfg.Default,
		groupRules:    make(map[string]Rule, len(cfg.Groups)),
		identityRules: make(map[string]Rule, len(cfg.Identities)),
	}
	for name, g := range cfg.Groups {
		p.groupRules[name] = g
	}
	for name, ir := range cfg.Identities {
		p.identityRules[name] = ir.Rule
	}
	for name, g := range cfg.Groups {
		p.groupPools[name] = g.Pool
	}
	for name, ir := range cfg.Identities {
		layers := []Rule{ir.Rule}
		for _, g := range ir.Groups {
			layers = append(layers, cfg.Groups[g])
		}
		layers = append(layers, cfg.Default)
		p.identities[name] = finish(merge(layers))
	}
	if err := p.compileAccess(cfg); err != nil {
		return nil, err
	}
	if err := p.runTests(cfg.Tests); err != nil {
		return nil, err
	}
	return p, nil
}

func merge(layers []Rule) Rule {
	var r Rule
	for _, l := range layers {
		if r.Pool == "" {
			r.Pool = l.Pool
		}
		if !r.StaticV4.IsValid() {
			r.StaticV4 = l.StaticV4
		}
		if len(r.Transports) == 0 {
			r.Transports = l.Transports
		}
		if len(r.Routes) == 0 {
			r.Routes = l.Routes
		}
		if len(r.DNS) == 0 {
			r.DNS = l.DNS
		}
		if len(r.DNSDomains) == 0 {
			r.DNSDomains = l.DNSDomains
		}
		if r.MaxSessions == 0 {
			r.MaxSessions = l.MaxSessions
		}
		if r.TEP == "" {
			r.TEP = l.TEP
		}
		if r.Access == nil {
			r.Access = l.Access
		}
	}
	return r
}

func finish(r Rule) Rule {
	out := Rule{Pool: r.Pool, StaticV4: r.StaticV4, MaxSessions: max(r.MaxSessions, 0), TEP: r.TEP, Access: r.Access}
	out.Transports = expandTransports(r.Transports)
	if !(len(r.Routes) == 1 && r.Routes[0].Bits() == 0) {
		out.Routes = slices.Clone(r.Routes)
	}
	out.DNS = slices.Clone(r.DNS)
	out.DNSDomains = slices.Clone(r.DNSDomains)
	return out
}

// expandTransports lower-cases, applies the built-in default and makes
// v4anyv6 imply v4dtlsv6 and v4tlsv6.
func expandTransports(ts []string) []string {
	if len(ts) == 0 {
		return []string{TransportV4AnyV6, TransportV4DTLSV6, TransportV4TLSV6}
	}
	out := make([]string, 0, len(ts)+2)
	for _, t := range ts {
		t = strings.ToLower(t)
		out = append(out, t)
		if t == TransportV4AnyV6 {
			out = append(out, TransportV4DTLSV6, TransportV4TLSV6)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Resolve returns the effective rule for identity. Unknown identities get
// the default rule, or ErrNotAllowed if the policy refuses them; a
// syntactically invalid identity yields ErrBadIdentity. The returned slices
// are the caller's to keep.
func (p *Policy) Resolve(identity string) (Rule, error) {
	if err := ValidIdentity(identity); err != nil {
		return Rule{}, err
	}
	r, ok := p.identities[identity]
	if !ok {
		if p.refuseUnknown {
			return Rule{}, fmt.Errorf("%w: %q is not listed and unknown identities are refused", ErrNotAllowed, identity)
		}
		r = p.defaultRule
	}
	return cloneRule(r), nil
}

func cloneRule(r Rule) Rule {
	r.Transports = slices.Clone(r.Transports)
	r.Routes = slices.Clone(r.Routes)
	r.DNS = slices.Clone(r.DNS)
	r.DNSDomains = slices.Clone(r.DNSDomains)
	return r
}

// Reservations returns the static IPv4 address of every identity that has
// one (identity → address). The map is a fresh copy.
func (p *Policy) Reservations() map[string]netip.Addr {
	out := make(map[string]netip.Addr)
	for name, r := range p.identities {
		if r.StaticV4.IsValid() {
			out[name] = r.StaticV4
		}
	}
	return out
}

// AllowsTransport reports whether the resolved rule allows tunnel type t
// (case-insensitive). A request for v4anyv6 is allowed when the rule allows
// v4dtlsv6 or v4tlsv6: the server then offers whichever the rule permits.
func (p *Policy) AllowsTransport(rule Rule, t string) bool {
	t = strings.ToLower(t)
	if t == TransportV4AnyV6 {
		return slices.Contains(rule.Transports, TransportV4AnyV6) ||
			slices.Contains(rule.Transports, TransportV4DTLSV6) ||
			slices.Contains(rule.Transports, TransportV4TLSV6)
	}
	return slices.Contains(rule.Transports, t)
}

// CheckPools calls check for the pool (and static address) of the default
// rule, each group and each identity, so that the gateway can check that
// they exist; pool "" is the default pool. The errors are joined.
func (p *Policy) CheckPools(check func(pool string, static netip.Addr) error) error {
	var errs []error
	if err := check(p.defaultRule.Pool, netip.Addr{}); err != nil {
		errs = append(errs, fmt.Errorf("policy.default.pool: %w", err))
	}
	for _, name := range sortedKeys(p.groupPools) {
		if err := check(p.groupPools[name], netip.Addr{}); err != nil {
			errs = append(errs, fmt.Errorf("policy.groups[%q].pool: %w", name, err))
		}
	}
	for _, name := range sortedKeys(p.identities) {
		r := p.identities[name]
		if err := check(r.Pool, r.StaticV4); err != nil {
			errs = append(errs, fmt.Errorf("policy.identities[%q]: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

var errNoPolicy = fmt.Errorf("%w: no policy loaded", ErrNotAllowed)

// PolicyHolder holds the current Policy and lets it be swapped atomically,
// e.g. on SIGHUP. Readers never block. The zero value holds no policy and
// refuses everyone.
type PolicyHolder struct {
	p atomic.Pointer[Policy]
}

// NewPolicyHolder returns a holder holding p.
func NewPolicyHolder(p *Policy) *PolicyHolder {
	h := &PolicyHolder{}
	h.p.Store(p)
	return h
}

// Load returns the current policy (nil if none was stored).
func (h *PolicyHolder) Load() *Policy { return h.p.Load() }

// Store replaces the current policy. Sessions already admitted keep the rule
// they resolved; the gateway decides whether to re-check them.
func (h *PolicyHolder) Store(p *Policy) { h.p.Store(p) }

// Resolve resolves identity against the current policy; with no policy
// stored it refuses with ErrNotAllowed.
func (h *PolicyHolder) Resolve(identity string) (Rule, error) {
	p := h.p.Load()
	if p == nil {
		return Rule{}, errNoPolicy
	}
	return p.Resolve(identity)
}
