package client

import (
	"fmt"
	"net"
	"slices"

	"github.com/godbus/dbus/v5"

	"github.com/dstmgw/dstm/internal/dnsconf"
	"github.com/dstmgw/dstm/tsp"
)

// DNS choices of the client (Config.DNS).
const (
	DNSAuto       = "auto"        // systemd-resolved where it manages the host's DNS, else resolv.conf
	DNSResolved   = "resolved"    // systemd-resolved only
	DNSResolvConf = "resolv.conf" // replace the resolv.conf file
	DNSOff        = "off"         // leave the host's DNS alone
)

// dnsState is the DNS configuration the client applied: it stays through reconnects and
// changes only when the offer's servers, domains or the device do (Run's goroutine only).
type dnsState struct {
	mgr     dnsconf.Manager
	bus     *dbus.Conn // the system bus of a resolved manager
	applied dnsconf.Config
	set     bool // applied is in force
}

// resolvConf is the resolv.conf manager of this client's state directory.
func (c *Client) resolvConf() *dnsconf.ResolvConf {
	return &dnsconf.ResolvConf{Path: c.cfg.ResolvConf, StateDir: c.cfg.StateDir}
}

// restoreCrashedDNS puts back a resolv.conf that a run which died left replaced.
func (c *Client) restoreCrashedDNS() {
	restored, err := c.resolvConf().RestoreSaved()
	switch {
	case err != nil:
		c.log.Error().Err(err).Str("path", c.cfg.ResolvConf).Msg("the DNS configuration of an earlier run could not be restored")
	case restored:
		c.log.Info().Str("path", c.cfg.ResolvConf).Msg("DNS configuration of an earlier run restored")
	}
}

// dnsFor is the resolver configuration an offer asks for on device index link. The tunnel's
// servers take every name (the default route) in a full tunnel, when "~." says so, or when
// no domain says which names are theirs. A classic v4v6 offer asks for none: its dns_server
// is for gogoc, who needs one, and is the gateway's own address when none is configured.
func dnsFor(offer *tsp.Tunnel, link int) dnsconf.Config {
	cl := offer.Client
	if !offer.Type.Extended() {
		return dnsconf.Config{Link: link}
	}
	return dnsconf.Config{
		Servers: slices.Clone(cl.DNSServers), Domains: slices.Clone(cl.DNSDomains), Link: link,
		DefaultRoute: len(cl.Routes) == 0 || len(cl.DNSDomains) == 0 || slices.Contains(cl.DNSDomains, "~."),
	}
}

// applyDNS configures the offer's DNS once the tunnel is up, unless it is in force already.
// A failure is logged and leaves the tunnel up: the next session tries again.
func (c *Client) applyDNS(offer *tsp.Tunnel) {
	if c.cfg.DNS == DNSOff {
		return
	}
	ifi, err := net.InterfaceByName(c.deviceName())
	if err != nil {
		c.log.Warn().Err(err).Msg("DNS not configured")
		return
	}
	want := dnsFor(offer, ifi.Index)
	st := c.dns
	if st != nil && st.set && st.applied.Equal(want) {
		return
	}
	if len(want.Servers) == 0 {
		c.restoreDNS() // the gateway no longer pushes servers
		return
	}
	if st == nil {
		if st, err = c.newDNSState(); err != nil {
			c.log.Warn().Err(err).Msg("DNS not configured")
			return
		}
		c.dns = st
	}
	err = st.mgr.Set(want)
	if err != nil && c.cfg.DNS == DNSAuto && st.mgr.Method() == dnsconf.MethodResolved {
		c.log.Warn().Err(err).Msg("systemd-resolved refused the tunnel's DNS; writing resolv.conf instead")
		_ = st.mgr.Restore()
		st.close()
		st = &dnsState{mgr: c.resolvConf()}
		c.dns = st
		err = st.mgr.Set(want)
	}
	st.set = true // also after a failed Set: Restore undoes what it changed
	if err != nil {
		st.applied = dnsconf.Config{}
		c.log.Warn().Err(err).Str("dns_method", st.mgr.Method()).Msg("DNS not configured")
		return
	}
	st.applied = want
	c.log.Info().Strs("dns", addrStrings(want.Servers)).Strs("dns_domains", want.Domains).
		Bool("dns_default_route", want.DefaultRoute).Str("dns_method", st.mgr.Method()).
		Str("device", c.deviceName()).Msg("DNS configured")
}

// newDNSState picks the manager for Config.DNS.
func (c *Client) newDNSState() (*dnsState, error) {
	if c.cfg.DNS == DNSResolvConf {
		return &dnsState{mgr: c.resolvConf()}, nil
	}
	bus, err := dbus.ConnectSystemBus()
	if err != nil {
		if c.cfg.DNS == DNSResolved {
			return nil, fmt.Errorf("systemd-resolved: the system bus: %w", err)
		}
		return &dnsState{mgr: c.resolvConf()}, nil
	}
	if c.cfg.DNS == DNSResolved || dnsconf.ResolvedRuns(bus, c.cfg.ResolvConf) {
		return &dnsState{mgr: dnsconf.NewResolved(bus), bus: bus}, nil
	}
	bus.Close()
	return &dnsState{mgr: c.resolvConf()}, nil
}

func (s *dnsState) close() {
	if s.bus != nil {
		s.bus.Close()
		s.bus = nil
	}
}

// restoreDNS puts the host's DNS back (`up` ends, or the gateway stopped pushing servers).
func (c *Client) restoreDNS() {
	st := c.dns
	if st == nil {
		return
	}
	if st.set {
		if err := st.mgr.Restore(); err != nil {
			c.log.Error().Err(err).Str("dns_method", st.mgr.Method()).Msg("DNS configuration not restored")
		} else {
			c.log.Info().Str("dns_method", st.mgr.Method()).Msg("DNS configuration restored")
		}
	}
	st.close()
	c.dns = nil
}

func addrStrings[T fmt.Stringer](as []T) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}
