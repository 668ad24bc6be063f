package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dstmgw/dstm/auth"
)

// FieldError names the configuration field that is wrong and why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func bad(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// minMemoryLimit is the smallest memory_limit: below what an idle gateway itself holds, the
// collector would run without end.
const minMemoryLimit = 64 << 20

// Validate checks every field and returns all problems found, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.validateStateDir())
	if c.MemoryLimit != 0 && c.MemoryLimit < minMemoryLimit {
		add(bad("memory_limit", "%s is below %s, too little for a gateway", c.MemoryLimit, ByteSize(minMemoryLimit)))
	}
	add(c.validateListen())
	add(c.validateTEP())
	errs = append(errs, c.validatePools()...)
	errs = append(errs, c.validateLeases()...)
	errs = append(errs, c.validateTSP()...)
	errs = append(errs, c.validateCA()...)
	errs = append(errs, c.validateLog()...)
	add(c.validateMetrics())
	if c.Admin.Socket == "" || !filepath.IsAbs(c.Admin.Socket) {
		add(bad("admin.socket", "must be an absolute path, got %q", c.Admin.Socket))
	}
	if _, err := auth.NewPolicy(c.Policy); err != nil {
		add(fmt.Errorf("policy: %w", err))
	}
	errs = append(errs, c.validatePolicyPools()...)
	errs = append(errs, c.validateStore()...)
	errs = append(errs, c.validateBGP()...)
	errs = append(errs, c.validateRoles()...)
	add(c.validateSSO())
	errs = append(errs, c.validateConsole()...)
	return errors.Join(errs...)
}

func (c *Config) validateStateDir() error {
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return bad("state_dir", "must be an absolute path, got %q", c.StateDir)
	}
	return nil
}

func (c *Config) validateListen() error {
	if len(c.Listen.Addresses) == 0 {
		return bad("listen.addresses", "at least one address:port is needed")
	}
	for i, a := range c.Listen.Addresses {
		if !a.IsValid() || a.Port() == 0 {
			return bad(fmt.Sprintf("listen.addresses[%d]", i), "%q is not an address with a port", a)
		}
	}
	return nil
}

func (c *Config) validateTEP() error {
	t := c.TEP
	switch {
	case t.IPv6.IsValid() && (!t.IPv6.Is6() || t.IPv6.Is4In6()):
		return bad("tep.ipv6", "%s is not an IPv6 address", t.IPv6)
	case t.IPv6.IsUnspecified() || t.IPv6.IsMulticast():
		return bad("tep.ipv6", "%s is not a unicast address", t.IPv6)
	case t.PlainTransport && !t.IPv6.IsValid():
		return bad("tep.ipv6", "required with tep.plain_transport (the v4v6 transport's raw socket binds it)")
	case !t.InnerV4.IsValid() || !t.InnerV4.Is4():
		return bad("tep.inner_v4", "an IPv4 address is required, got %q", t.InnerV4)
	case t.Device == "" || len(t.Device) > 15 || strings.ContainsAny(t.Device, "/ \t"):
		return bad("tep.device", "%q is not a valid interface name (1-15 characters)", t.Device)
	case t.MTU < 576 || t.MTU > 9000:
		return bad("tep.mtu", "%d is outside 576..9000", t.MTU)
	case t.Keepalive.D() < 0 || t.Keepalive.D() > time.Hour:
		return bad("tep.keepalive", "%s is outside 0..1h", t.Keepalive.D())
	}
	if why, ok := special(span{u32(t.InnerV4), u32(t.InnerV4)}); ok {
		return bad("tep.inner_v4", "%s %s", t.InnerV4, why)
	}
	for i, a := range t.DNSv6 {
		if !a.Is6() || a.Is4In6() {
			return bad(fmt.Sprintf("tep.dns_v6[%d]", i), "%s is not an IPv6 address", a)
		}
	}
	for i, a := range t.DNSv4 {
		if !a.Is4() {
			return bad(fmt.Sprintf("tep.dns_v4[%d]", i), "%s is not an IPv4 address", a)
		}
	}
	return nil
}

func (c *Config) validateLeases() []error {
	l := c.Leases
	var errs []error
	if l.OfferTimeout.D() < time.Second || l.OfferTimeout.D() > 10*time.Minute {
		errs = append(errs, bad("leases.offer_timeout", "%s is outside 1s..10m", l.OfferTimeout.D()))
	}
	if l.Lifetime.D() < 10*time.Second || l.Lifetime.D() > 30*24*time.Hour {
		errs = append(errs, bad("leases.lifetime", "%s is outside 10s..720h", l.Lifetime.D()))
	}
	if l.HoldTime.D() < 0 {
		errs = append(errs, bad("leases.hold_time", "must not be negative"))
	}
	if l.MaxSessions < 1 || l.MaxSessions > 1024 {
		errs = append(errs, bad("leases.max_sessions", "%d is outside 1..1024", l.MaxSessions))
	}
	if l.OnLimit != "replace_oldest" && l.OnLimit != "refuse" {
		errs = append(errs, bad("leases.on_limit", "%q is not one of replace_oldest, refuse", l.OnLimit))
	}
	if l.OnRevoke != "release" && l.OnRevoke != "hold" {
		errs = append(errs, bad("leases.on_revoke", "%q is not one of release, hold", l.OnRevoke))
	}
	return errs
}

func (c *Config) validateTSP() []error {
	t := c.TSP
	var errs []error
	if t.Plain != PlainOff && t.Plain != PlainTLSOnly && t.Plain != PlainAlways {
		errs = append(errs, bad("tsp.plain", "%q is not one of off, tls_only, always", t.Plain))
	}
	if t.Passwords != "" && !filepath.IsAbs(t.Passwords) {
		errs = append(errs, bad("tsp.passwords", "must be an absolute path, got %q", t.Passwords))
	}
	if t.DigestMD5 && t.Passwords == "" {
		errs = append(errs, bad("tsp.passwords", "digest_md5 is enabled but no htdigest file is configured"))
	}
	if t.Realm == "" || strings.ContainsAny(t.Realm, "\",\r\n") {
		errs = append(errs, bad("tsp.realm", "%q must be non-empty without quotes, commas or newlines", t.Realm))
	}
	if t.HandshakeTimeout.D() < time.Second || t.HandshakeTimeout.D() > 5*time.Minute {
		errs = append(errs, bad("tsp.handshake_timeout", "%s is outside 1s..5m", t.HandshakeTimeout.D()))
	}
	if t.MaxHandshakes < 1 || t.MaxHandshakes > 100000 {
		errs = append(errs, bad("tsp.max_handshakes", "%d is outside 1..100000", t.MaxHandshakes))
	}
	if t.MaxSessionsPerSource < 1 || t.MaxSessionsPerSource > 100000 {
		errs = append(errs, bad("tsp.max_sessions_per_source", "%d is outside 1..100000", t.MaxSessionsPerSource))
	}
	if t.ConnectionRate < 0 || t.ConnectionRate > 1000000 {
		errs = append(errs, bad("tsp.connection_rate", "%d is outside 0..1000000", t.ConnectionRate))
	}
	if t.UDPIdleTimeout.D() < 5*time.Second || t.UDPIdleTimeout.D() > 24*time.Hour {
		errs = append(errs, bad("tsp.udp_idle_timeout", "%s is outside 5s..24h", t.UDPIdleTimeout.D()))
	}
	return errs
}

func (c *Config) validateCA() []error {
	var errs []error
	if len(c.CA.ServerNames) == 0 && len(c.CA.ServerIPs) == 0 {
		errs = append(errs, bad("ca.server_names", "the gateway certificate needs at least one name or address"))
	}
	for i, n := range c.CA.ServerNames {
		if n == "" || strings.ContainsAny(n, " /:@") || len(n) > 253 {
			errs = append(errs, bad(fmt.Sprintf("ca.server_names[%d]", i), "%q is not a DNS name", n))
		}
	}
	if d := c.CA.ClientCertLifetime.D(); d < 5*time.Minute || d > 365*24*time.Hour {
		errs = append(errs, bad("ca.client_cert_lifetime", "%s is outside 5m..8760h", d))
	}
	if d := c.CA.TokenTTL.D(); d < time.Minute || d > 7*24*time.Hour {
		errs = append(errs, bad("ca.token_ttl", "%s is outside 1m..168h", d))
	}
	return errs
}

func (c *Config) validateLog() []error {
	var errs []error
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		errs = append(errs, bad("log.level", "%q is not one of trace, debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "auto", "json", "console":
	default:
		errs = append(errs, bad("log.format", "%q is not one of auto, json, console", c.Log.Format))
	}
	return errs
}

func (c *Config) validateMetrics() error {
	if c.Metrics.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
		return bad("metrics.listen", "%q is not host:port", c.Metrics.Listen)
	}
	return nil
}

// validatePolicyPools checks that policy rules name pools that exist and static addresses
// that the pools can lease (inside one, not excluded, not tep.inner_v4).
func (c *Config) validatePolicyPools() []error {
	var errs []error
	pools := map[string]bool{}
	for _, p := range c.Pools {
		pools[p.Name] = true
	}
	check := func(field string, r auth.Rule) {
		if r.Pool != "" && !pools[r.Pool] {
			errs = append(errs, bad(field+".pool", "pool %q is not defined in pools", r.Pool))
		}
		if r.TEP != "" && !ValidNodeName(r.TEP) {
			errs = append(errs, bad(field+".tep", "%q is not a node name (1 to 63 letters, digits, '-', '_' or '.')", r.TEP))
		}
		if r.StaticV4.IsValid() {
			if why, ok := c.checkStatic(r.StaticV4); !ok {
				errs = append(errs, bad(field+".static_v4", "%s", why))
			}
		}
	}
	check("policy.default", c.Policy.Default)
	for name, r := range c.Policy.Groups {
		check(fmt.Sprintf("policy.groups[%q]", name), r)
	}
	for name, r := range c.Policy.Identities {
		check(fmt.Sprintf("policy.identities[%q]", name), r.Rule)
	}
	return errs
}

// ValidNodeName reports whether s is a valid cluster member name: 1 to 63 letters, digits,
// '.', '-' or '_'.
func ValidNodeName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *Config) validateStore() []error {
	e := c.Store.Etcd
	if e == nil {
		return nil
	}
	var errs []error
	if len(e.Endpoints) == 0 {
		errs = append(errs, bad("store.etcd.endpoints", "at least one etcd endpoint is needed"))
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" && u.Path != "/":
			errs = append(errs, bad(fmt.Sprintf("store.etcd.endpoints[%d]", i), "want http://host:port or https://host:port, got %q", ep))
		case u.Port() == "":
			errs = append(errs, bad(fmt.Sprintf("store.etcd.endpoints[%d]", i), "%q has no port (etcd's client port is usually 2379)", ep))
		case u.Scheme == "https" && e.TLS == nil:
			errs = append(errs, bad(fmt.Sprintf("store.etcd.endpoints[%d]", i), "%q is https: store.etcd.tls.ca is needed", ep))
		case u.Scheme == "http" && e.TLS != nil:
			errs = append(errs, bad(fmt.Sprintf("store.etcd.endpoints[%d]", i), "%q is plain http but store.etcd.tls is set", ep))
		}
	}
	if e.Name != "" && !ValidNodeName(e.Name) {
		errs = append(errs, bad("store.etcd.name", "want 1 to 63 letters, digits, '.', '-' or '_', got %q", e.Name))
	}
	if e.Prefix != "" && (!strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/")) {
		errs = append(errs, bad("store.etcd.prefix", "must start and end with '/', got %q", e.Prefix))
	}
	if d := e.TTL.D(); d != 0 && (d < 2*time.Second || d > time.Minute || d%time.Second != 0) {
		errs = append(errs, bad("store.etcd.ttl", "want whole seconds from 2s to 1m, got %v", d))
	}
	if d := e.DialTimeout.D(); d < 0 || d > time.Minute {
		errs = append(errs, bad("store.etcd.dial_timeout", "want 0 (default 5s) to 1m, got %v", d))
	}
	if d := e.RequestTimeout.D(); d < 0 || d > time.Minute {
		errs = append(errs, bad("store.etcd.request_timeout", "want 0 (default 3s) to 1m, got %v", d))
	}
	if e.MaxTxnOps != 0 && (e.MaxTxnOps < 8 || e.MaxTxnOps > 65536) {
		errs = append(errs, bad("store.etcd.max_txn_ops", "want the cluster's --max-txn-ops (8 to 65536; default 128), got %d", e.MaxTxnOps))
	}
	if t := e.TLS; t != nil {
		if t.CA == "" || !filepath.IsAbs(t.CA) {
			errs = append(errs, bad("store.etcd.tls.ca", "must be an absolute path, got %q", t.CA))
		}
		if (t.Cert == "") != (t.Key == "") {
			errs = append(errs, bad("store.etcd.tls", "cert and key go together"))
		}
		for _, f := range [...]struct{ field, path string }{{"cert", t.Cert}, {"key", t.Key}} {
			if f.path != "" && !filepath.IsAbs(f.path) {
				errs = append(errs, bad("store.etcd.tls."+f.field, "must be an absolute path, got %q", f.path))
			}
		}
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		errs = append(errs, bad("store.etcd.username", "username and password_file go together"))
	}
	if e.PasswordFile != "" && !filepath.IsAbs(e.PasswordFile) {
		errs = append(errs, bad("store.etcd.password_file", "must be an absolute path, got %q", e.PasswordFile))
	}
	return errs
}

// ParseCommunity parses an RFC 1997 community "AS:VALUE" (each 0 to 65535).
func ParseCommunity(s string) (uint32, error) {
	a, v, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("want AS:VALUE, got %q", s)
	}
	x, err1 := strconv.ParseUint(a, 10, 16)
	y, err2 := strconv.ParseUint(v, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("want AS:VALUE with numbers from 0 to 65535, got %q", s)
	}
	return uint32(x)<<16 | uint32(y), nil
}

func (c *Config) validateBGP() []error {
	b := c.BGP
	if b == nil {
		return nil
	}
	var errs []error
	if b.LocalAS == 0 {
		errs = append(errs, bad("bgp.local_as", "is required (1 to 4294967295)"))
	}
	if !b.RouterID.Is4() {
		errs = append(errs, bad("bgp.router_id", "want an IPv4 address (the BGP identifier), got %q", b.RouterID))
	}
	switch b.Announce {
	case "", AnnouncePools, AnnounceLeases:
	default:
		errs = append(errs, bad("bgp.announce", "want %q or %q, got %q", AnnouncePools, AnnounceLeases, b.Announce))
	}
	if b.NextHop.IsValid() && !b.NextHop.Is4() {
		errs = append(errs, bad("bgp.next_hop", "want an IPv4 address, got %s", b.NextHop))
	}
	for i, cm := range b.Communities {
		if _, err := ParseCommunity(cm); err != nil {
			errs = append(errs, bad(fmt.Sprintf("bgp.communities[%d]", i), "%v", err))
		}
	}
	if b.RestartTime != nil {
		if d := b.RestartTime.D(); d < 0 || d > 4095*time.Second || d%time.Second != 0 {
			errs = append(errs, bad("bgp.restart_time", "want whole seconds from 0s (off) to 4095s, got %v", d))
		}
	}
	if len(b.Neighbors) == 0 {
		errs = append(errs, bad("bgp.neighbors", "at least one neighbour (a site router) is needed"))
	}
	seen := map[netip.Addr]bool{}
	for i, n := range b.Neighbors {
		f := fmt.Sprintf("bgp.neighbors[%d]", i)
		if !n.Address.IsValid() {
			errs = append(errs, bad(f+".address", "is required"))
		} else if seen[n.Address] {
			errs = append(errs, bad(f+".address", "%s is listed twice", n.Address))
		}
		seen[n.Address] = true
		if n.AS == 0 {
			errs = append(errs, bad(f+".as", "is required (1 to 4294967295)"))
		}
		if n.PasswordFile != "" && !filepath.IsAbs(n.PasswordFile) {
			errs = append(errs, bad(f+".password_file", "must be an absolute path, got %q", n.PasswordFile))
		}
	}
	return errs
}

func (c *Config) validateRoles() []error {
	if c.Roles == nil {
		return nil
	}
	if len(c.Roles) == 0 {
		return []error{bad("roles", "empty: name %q, %q or both (or leave roles out)", RoleControl, RoleTEP)}
	}
	var errs []error
	seen := map[string]bool{}
	for i, r := range c.Roles {
		switch {
		case r != RoleControl && r != RoleTEP:
			errs = append(errs, bad(fmt.Sprintf("roles[%d]", i), "want %q or %q, got %q", RoleControl, RoleTEP, r))
		case seen[r]:
			errs = append(errs, bad(fmt.Sprintf("roles[%d]", i), "%q named twice", r))
		}
		seen[r] = true
	}
	if len(errs) > 0 || !c.Split() {
		return errs
	}
	if c.Store.Etcd == nil {
		errs = append(errs, bad("roles", "%v needs store.etcd: the TEP nodes and the session bindings are kept there", c.Roles))
	}
	if !c.Has(RoleTEP) && c.BGP != nil {
		errs = append(errs, bad("bgp", "routes are announced by the nodes with the tep role; this node's roles are %v", c.Roles))
	}
	if !c.Has(RoleControl) {
		if !c.TEP.IPv6.IsValid() {
			errs = append(errs, bad("tep.ipv6", "required with roles %v: the outer address control nodes name in their offers", c.Roles))
		}
		if pool := c.PoolOf(c.TEP.InnerV4); pool != "" {
			errs = append(errs, bad("tep.inner_v4", "%s is in pool %q: with roles %v it must be outside the pools (the control nodes lease every address of them)", c.TEP.InnerV4, pool, c.Roles))
		}
		if !c.Listen.UDP && !c.TEP.PlainTransport {
			errs = append(errs, bad("roles", "a TEP node serves DTLS (listen.udp) or v4v6 (tep.plain_transport); both are off"))
		}
	}
	return errs
}

func (c *Config) validateSSO() error {
	if c.SSO == nil {
		return nil
	}
	if !c.Has(RoleControl) {
		return bad("sso", "enrollment runs on the nodes with the control role; this node's roles are %v", c.Roles)
	}
	groups := make(map[string]bool, len(c.Policy.Groups))
	for g := range c.Policy.Groups {
		groups[g] = true
	}
	return c.SSO.Validate("sso", groups)
}
