package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Protocol names of Rule.Proto.
const (
	ProtoAny  = "any"
	ProtoTCP  = "tcp"
	ProtoUDP  = "udp"
	ProtoICMP = "icmp"
)

// MaxRules bounds the rules of one direction of an access block: the
// compiled tables grow with the product of overlapping rules.
const MaxRules = 4096

// Access is the access block of a policy rule. A nil *Access means "no
// access control" (today's behaviour: everything passes, nothing is
// tracked). A non-nil Access allows only what its rules allow, plus replies
// to allowed flows; an empty list allows nothing in that direction.
type Access struct {
	// Outbound rules: client → IPv4 world, by destination (To).
	Outbound []Rule `yaml:"outbound,omitempty"`
	// Inbound rules: IPv4 world → client, by source (From); the ports are
	// the client's.
	Inbound []Rule `yaml:"inbound,omitempty"`
	// Reject answers a denied packet: a TCP RST for TCP, ICMP
	// administratively prohibited for the rest. Off: silently dropped.
	Reject bool `yaml:"reject,omitempty"`
}

// Rule allows packets to (outbound) or from (inbound) the listed prefixes,
// of one protocol, to the listed destination ports (none: every port).
// ToPools and FromPools name lease pools whose prefixes join To and From
// (rules between clients); CompileWith resolves them.
type Rule struct {
	To        []netip.Prefix `yaml:"to,omitempty"`
	From      []netip.Prefix `yaml:"from,omitempty"`
	ToPools   []string       `yaml:"to_pools,omitempty"`
	FromPools []string       `yaml:"from_pools,omitempty"`
	Proto     string         `yaml:"proto,omitempty"` // tcp, udp, icmp or any ("" = any)
	Ports     []PortRange    `yaml:"ports,omitempty"` // tcp and udp only; with proto any they mean tcp and udp
}

// PortRange is an inclusive range of ports, written "443" or "8000-8080".
type PortRange struct{ Lo, Hi uint16 }

// String writes the range as it is read.
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ParsePortRange parses "N" or "LO-HI" (1..65535, LO <= HI).
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err := parsePort(lo)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{a, a}, nil
	}
	b, err := parsePort(hi)
	if err != nil {
		return PortRange{}, err
	}
	if b < a {
		return PortRange{}, fmt.Errorf("port range %q is backwards", s)
	}
	return PortRange{a, b}, nil
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad port %q (want 1..65535)", s)
	}
	return uint16(n), nil
}

// UnmarshalYAML reads a port (443) or a range ("8000-8080").
func (r *PortRange) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("a port range is a number or \"LO-HI\"")
	}
	pr, err := ParsePortRange(n.Value)
	if err != nil {
		return err
	}
	*r = pr
	return nil
}

// MarshalYAML writes the range as it is read.
func (r PortRange) MarshalYAML() (any, error) {
	if r.Lo == r.Hi {
		return int(r.Lo), nil
	}
	return r.String(), nil
}

// Validate checks the access block; each error names its field below
// field, e.g. `policy.groups["eng"].access.outbound[2].ports[0]`.
func (a *Access) Validate(field string) error {
	var errs []error
	if len(a.Outbound) > MaxRules {
		errs = append(errs, fmt.Errorf("%s.outbound: %d rules, at most %d", field, len(a.Outbound), MaxRules))
	}
	if len(a.Inbound) > MaxRules {
		errs = append(errs, fmt.Errorf("%s.inbound: %d rules, at most %d", field, len(a.Inbound), MaxRules))
	}
	for i, r := range a.Outbound {
		errs = append(errs, r.validate(fmt.Sprintf("%s.outbound[%d]", field, i), Outbound)...)
	}
	for i, r := range a.Inbound {
		errs = append(errs, r.validate(fmt.Sprintf("%s.inbound[%d]", field, i), Inbound)...)
	}
	return errors.Join(errs...)
}

func (r Rule) validate(field string, d Dir) []error {
	var errs []error
	bad := func(sub, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", field, sub, fmt.Sprintf(format, args...)))
	}
	nets, pools, key, other := r.To, r.ToPools, "to", len(r.From)+len(r.FromPools)
	if d == Inbound {
		nets, pools, key, other = r.From, r.FromPools, "from", len(r.To)+len(r.ToPools)
	}
	if other > 0 {
		bad("", "%s rules name their peers with %q or %q", d, key, key+"_pools")
	}
	if len(nets) == 0 && len(pools) == 0 {
		bad("."+key, "at least one prefix (0.0.0.0/0 for any address) or pool is needed")
	}
	for i, p := range pools {
		if p == "" || slices.Contains(pools[:i], p) {
			bad(fmt.Sprintf(".%s_pools[%d]", key, i), "empty or repeated pool name %q", p)
		}
	}
	for i, p := range nets {
		switch {
		case !p.IsValid() || !p.Addr().Is4():
			bad(fmt.Sprintf(".%s[%d]", key, i), "%s is not an IPv4 prefix", p)
		case p != p.Masked():
			bad(fmt.Sprintf(".%s[%d]", key, i), "%s has host bits set; did you mean %s?", p, p.Masked())
		case slices.Contains(nets[:i], p):
			bad(fmt.Sprintf(".%s[%d]", key, i), "%s listed twice", p)
		}
	}
	switch r.Proto {
	case "", ProtoAny, ProtoTCP, ProtoUDP:
	case ProtoICMP:
		if len(r.Ports) > 0 {
			bad(".ports", "icmp has no ports")
		}
	default:
		bad(".proto", "unknown protocol %q (want tcp, udp, icmp or any)", r.Proto)
	}
	for i, p := range r.Ports {
		if p.Lo == 0 || p.Hi < p.Lo {
			bad(fmt.Sprintf(".ports[%d]", i), "bad port range %d-%d", p.Lo, p.Hi)
		}
	}
	return errs
}
