package auth

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/dstmgw/dstm/internal/dnsname"
)

// validatePolicy checks cfg completely and joins every problem found, in a
// deterministic order.
func validatePolicy(cfg PolicyConfig) error {
	var errs []error
	switch cfg.Unknown {
	case "", UnknownDefault, UnknownRefuse:
	default:
		errs = append(errs, fmt.Errorf("policy.unknown: must be %q or %q, got %q", UnknownDefault, UnknownRefuse, cfg.Unknown))
	}
	errs = append(errs, validateRule("policy.default", cfg.Default, false)...)
	for _, name := range sortedKeys(cfg.Groups) {
		field := fmt.Sprintf("policy.groups[%q]", name)
		if err := ValidIdentity(name); err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid group name: %w", field, err))
		}
		errs = append(errs, validateRule(field, cfg.Groups[name], false)...)
	}
	for _, name := range sortedKeys(cfg.Identities) {
		errs = append(errs, validateIdentityRule(name, cfg.Identities[name], cfg.Groups)...)
	}
	errs = append(errs, validateReservations(cfg.Identities)...)
	return errors.Join(errs...)
}

func validateIdentityRule(name string, ir IdentityRule, groups map[string]Rule) []error {
	field := fmt.Sprintf("policy.identities[%q]", name)
	var errs []error
	if err := ValidIdentity(name); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", field, err))
	}
	for i, g := range ir.Groups {
		if _, ok := groups[g]; !ok {
			errs = append(errs, fmt.Errorf("%s.groups[%d]: unknown group %q", field, i, g))
		}
		if slices.Index(ir.Groups, g) < i {
			errs = append(errs, fmt.Errorf("%s.groups[%d]: group %q listed twice", field, i, g))
		}
	}
	return append(errs, validateRule(field, ir.Rule, true)...)
}

func validateReservations(ids map[string]IdentityRule) []error {
	var errs []error
	owner := make(map[netip.Addr]string)
	for _, name := range sortedKeys(ids) {
		a := ids[name].StaticV4
		if !a.IsValid() {
			continue
		}
		if first, taken := owner[a]; taken {
			errs = append(errs, fmt.Errorf("policy.identities[%q].static_v4: %s is already reserved for %q", name, a, first))
			continue
		}
		owner[a] = name
	}
	return errs
}

// validateRule checks the fields of one configured rule; field is its path.
func validateRule(field string, r Rule, allowStatic bool) []error {
	var errs []error
	add := func(sub string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", field, sub, err))
		}
	}
	if r.Pool != "" {
		add("pool", validName(r.Pool))
	}
	if r.StaticV4.IsValid() {
		add("static_v4", validStatic(r.StaticV4, allowStatic))
	}
	for i, t := range r.Transports {
		add(fmt.Sprintf("transports[%d]", i), validTransport(t))
	}
	for i, p := range r.Routes {
		add(fmt.Sprintf("routes[%d]", i), validRoute(p, r.Routes[:i], len(r.Routes)))
	}
	for i, a := range r.DNS {
		add(fmt.Sprintf("dns[%d]", i), validDNS(a))
	}
	if len(r.DNSDomains) > dnsname.MaxDomains {
		add("dns_domains", fmt.Errorf("%d domains: at most %d", len(r.DNSDomains), dnsname.MaxDomains))
	}
	for i, d := range r.DNSDomains {
		add(fmt.Sprintf("dns_domains[%d]", i), validDNSDomain(d, r.DNSDomains[:i]))
	}
	if r.MaxSessions < -1 {
		add("max_sessions", fmt.Errorf("must be -1 (unlimited), 0 (inherit) or positive, got %d", r.MaxSessions))
	}
	if r.Access != nil {
		// acl names the fields below access itself
		if err := r.Access.Validate(field + ".access"); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func validName(s string) error {
	if err := ValidIdentity(s); err != nil {
		return fmt.Errorf("invalid name: %w", err)
	}
	return nil
}

func validStatic(a netip.Addr, allowed bool) error {
	switch {
	case !allowed:
		return fmt.Errorf("%s: static addresses belong to one identity; set static_v4 on the identity", a)
	case !a.Is4():
		return fmt.Errorf("%s is not an IPv4 address", a)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is not a unicast address", a)
	}
	return nil
}

func validTransport(t string) error {
	switch strings.ToLower(t) {
	case TransportV4V6, TransportV4DTLSV6, TransportV4TLSV6, TransportV4AnyV6:
		return nil
	}
	return fmt.Errorf("unknown tunnel type %q (want %s, %s, %s or %s)", t,
		TransportV4V6, TransportV4DTLSV6, TransportV4TLSV6, TransportV4AnyV6)
}

func validRoute(p netip.Prefix, before []netip.Prefix, n int) error {
	switch {
	case !p.IsValid():
		return errors.New("invalid prefix")
	case !p.Addr().Is4():
		return fmt.Errorf("%s is not an IPv4 prefix", p)
	case p != p.Masked():
		return fmt.Errorf("%s has host bits set; did you mean %s?", p, p.Masked())
	case p.Bits() == 0 && n > 1:
		return errors.New("0.0.0.0/0 means full tunnel and must be the only route")
	case slices.Contains(before, p):
		return fmt.Errorf("%s listed twice", p)
	}
	return nil
}

func validDNS(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid address")
	case a.IsUnspecified(), a.IsMulticast():
		return fmt.Errorf("%s is not a unicast address", a)
	case a.Zone() != "":
		return fmt.Errorf("%s: zones are not allowed", a)
	}
	return nil
}

func validDNSDomain(d string, before []string) error {
	if err := dnsname.Check(d); err != nil {
		return err
	}
	for _, b := range before {
		if strings.EqualFold(b, d) {
			return fmt.Errorf("%q listed twice", d)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
