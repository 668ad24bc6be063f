// Package dnsname checks the DNS domains a policy pushes to clients (`dns_domains`), in the
// notation systemd-resolved uses: "corp.example" is a search domain (and routes its names to
// the tunnel's servers), "~corp.example" only routes its names there, and "~." routes every
// name there. The policy, the TSP codec and the client share this one definition.
package dnsname

import (
	"errors"
	"fmt"
	"strings"
)

// Limits: MaxLen is the longest domain entry, the "~" included; MaxDomains the most entries a
// policy rule or an offer carries.
const (
	MaxLen     = 254
	MaxDomains = 8
)

// Check reports whether s is a valid domain entry: an optional "~", then "." (only after
// "~") or a name of labels of letters, digits, '-' and '_' (1–63 bytes each, no '-' at either
// end), at most 253 bytes, without a trailing dot.
func Check(s string) error {
	name, routeOnly := Split(s)
	switch {
	case name == "." && routeOnly:
		return nil
	case name == "":
		return errors.New("empty domain")
	case len(name) > 253:
		return fmt.Errorf("domain of %d bytes: at most 253", len(name))
	case strings.HasSuffix(name, "."):
		return fmt.Errorf("domain %q: no trailing dot", s)
	}
	for label := range strings.SplitSeq(name, ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("domain %q: %w", s, err)
		}
	}
	return nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return errors.New("empty label")
	case len(l) > 63:
		return errors.New("label longer than 63 bytes")
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("label %q: byte %q is not a letter, digit, '-' or '_'", l, c)
		}
	}
	return nil
}

// Split returns the name of an entry and whether it only routes ("~" prefix).
func Split(s string) (name string, routeOnly bool) {
	if rest, ok := strings.CutPrefix(s, "~"); ok {
		return rest, true
	}
	return s, false
}
