// Package dnsconf points the host's resolver at a tunnel's DNS servers and domains, and puts
// back what was there: through systemd-resolved's per-link settings over D-Bus where resolved
// manages the host's DNS (Resolved), or by replacing /etc/resolv.conf after saving the
// original in the client's state directory (ResolvConf).
package dnsconf

import (
	"net/netip"
	"slices"
)

// Config is the resolver configuration of one tunnel.
type Config struct {
	Servers []netip.Addr
	// Domains are internal/dnsname entries: search domains, routing-only ones ("~name"),
	// "~." for every name.
	Domains []string
	// DefaultRoute sends names outside Domains to Servers too (a full tunnel).
	DefaultRoute bool
	// Link is the tunnel device's interface index (resolved's settings are per link).
	Link int
}

// Equal reports whether c and o configure the same.
func (c Config) Equal(o Config) bool {
	return slices.Equal(c.Servers, o.Servers) && slices.Equal(c.Domains, o.Domains) &&
		c.DefaultRoute == o.DefaultRoute && c.Link == o.Link
}

// Manager applies a Config and restores the host's own.
type Manager interface {
	// Set applies c, replacing what an earlier Set applied.
	Set(c Config) error
	// Restore puts back the host's configuration; without an applied Set it does nothing.
	Restore() error
	// Method names the mechanism, for logs: "resolved" or "resolv.conf".
	Method() string
}

// Method names.
const (
	MethodResolved   = "resolved"
	MethodResolvConf = "resolv.conf"
)
