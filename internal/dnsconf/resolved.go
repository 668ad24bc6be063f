package dnsconf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/dstmgw/dstm/internal/dnsname"
)

// systemd-resolved's D-Bus names (org.freedesktop.resolve1(5)).
const (
	resolvedBusName = "org.freedesktop.resolve1"
	resolvedPath    = dbus.ObjectPath("/org/freedesktop/resolve1")
	resolvedManager = "org.freedesktop.resolve1.Manager"
)

// Resolved configures the tunnel's link in systemd-resolved, as `resolvectl dns/domain/
// default-route` do: the servers, the domains (search, or routing-only for "~" entries) and
// whether the link takes names outside its domains. Restore reverts the link
// (`resolvectl revert`); a link that disappears (the client died) loses its settings in
// resolved by itself, so a crash leaves nothing to restore. Not safe for concurrent use.
type Resolved struct {
	conn *dbus.Conn
	link int // the link an applied Set configured; 0: none
}

var _ Manager = (*Resolved)(nil)

// NewResolved uses conn (the system bus) to reach systemd-resolved.
func NewResolved(conn *dbus.Conn) *Resolved { return &Resolved{conn: conn} }

// Method implements Manager.
func (r *Resolved) Method() string { return MethodResolved }

// linkDNS is one (family, address) of SetLinkDNS's a(iay).
type linkDNS struct {
	Family  int32
	Address []byte
}

// linkDomain is one (domain, routing only) of SetLinkDomains's a(sb).
type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

// Address families as SetLinkDNS takes them.
const (
	afInet  = 2  // AF_INET
	afInet6 = 10 // AF_INET6
)

func (r *Resolved) manager() dbus.BusObject { return r.conn.Object(resolvedBusName, resolvedPath) }

// callTimeout bounds one call: a resolved that does not answer must not hold the tunnel up.
const callTimeout = 5 * time.Second

func (r *Resolved) call(method string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := r.manager().CallWithContext(ctx, resolvedManager+"."+method, 0, args...).Err; err != nil {
		return fmt.Errorf("systemd-resolved %s: %w", method, err)
	}
	return nil
}

// Set implements Manager. A link configured before (a device set up again) is reverted first.
func (r *Resolved) Set(c Config) error {
	if c.Link <= 0 {
		return errors.New("systemd-resolved: no link index")
	}
	if r.link != 0 && r.link != c.Link {
		_ = r.call("RevertLink", int32(r.link)) // the old device is usually gone, and its settings with it
	}
	r.link = c.Link // from here on Restore reverts, also after a partial Set
	link := int32(c.Link)
	if err := r.call("SetLinkDNS", link, resolvedServers(c)); err != nil {
		return err
	}
	if err := r.call("SetLinkDomains", link, resolvedDomains(c)); err != nil {
		return err
	}
	if err := r.call("SetLinkDefaultRoute", link, c.DefaultRoute); err != nil && !unknownMethod(err) {
		return err // resolved before v240 has no default-route setting: its links all take every name
	}
	_ = r.call("FlushCaches") // answers cached from the host's servers go
	return nil
}

func resolvedServers(c Config) []linkDNS {
	out := make([]linkDNS, 0, len(c.Servers))
	for _, a := range c.Servers {
		if a.Is4() {
			b := a.As4()
			out = append(out, linkDNS{Family: afInet, Address: b[:]})
		} else {
			b := a.As16()
			out = append(out, linkDNS{Family: afInet6, Address: b[:]})
		}
	}
	return out
}

func resolvedDomains(c Config) []linkDomain {
	out := make([]linkDomain, 0, len(c.Domains))
	for _, d := range c.Domains {
		name, routeOnly := dnsname.Split(d)
		out = append(out, linkDomain{Domain: name, RoutingOnly: routeOnly})
	}
	return out
}

func unknownMethod(err error) bool {
	var de dbus.Error
	return errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.UnknownMethod"
}

// Restore implements Manager: the link's settings are reverted.
func (r *Resolved) Restore() error {
	if r.link == 0 {
		return nil
	}
	err := r.call("RevertLink", int32(r.link))
	r.link = 0
	return err
}

// ResolvedRuns reports whether systemd-resolved manages the host's DNS, as wg-quick's
// resolvconf and Tailscale decide it: resolvPath points into /run/systemd/resolve or names
// its stub listener 127.0.0.53, and resolved holds its name on the bus.
func ResolvedRuns(conn *dbus.Conn, resolvPath string) bool {
	if !resolvConfIsResolved(resolvPath) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var has bool
	err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, resolvedBusName).Store(&has)
	return err == nil && has
}

// resolvConfIsResolved reports whether the file at path is one systemd-resolved manages.
func resolvConfIsResolved(path string) bool {
	if target, err := os.Readlink(path); err == nil {
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		if strings.HasPrefix(filepath.Clean(target), "/run/systemd/resolve/") {
			return true
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" && f[1] == "127.0.0.53" {
			return true
		}
	}
	return false
}
