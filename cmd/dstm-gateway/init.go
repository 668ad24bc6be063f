package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/config"
)

type initOptions struct {
	stateDir, listen, ipv6, pool, innerV4, socket string
	names, ips                                    []string
	plain                                         bool
}

// runInit builds the configuration from the file (if any) and the flags, validates it,
// creates the CA and writes the configuration file if it does not exist yet.
func runInit(cmd *cobra.Command, g *globals, o initOptions) error {
	cfg, err := loadConfig(g.config, true)
	if err != nil {
		return err
	}
	_, statErr := os.Stat(g.config)
	exists := statErr == nil
	if err := o.apply(&cfg); err != nil {
		return usageError{err}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	if err := mkdirPrivate(cfg.StateDir); err != nil {
		return err
	}
	ca, err := certs.Init(filepath.Join(cfg.StateDir, gateway.CADir), gateway.CAOptions(cfg, zerolog.Nop(), time.Now))
	if err != nil {
		return err
	}
	fp := ca.Fingerprint()
	if err := ca.Close(); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Created the certificate authority in %s\n", filepath.Join(cfg.StateDir, gateway.CADir))
	if !exists {
		if err := writeConfig(g.config, cfg); err != nil {
			return err
		}
		fmt.Fprintf(out, "Wrote the configuration to %s\n", g.config)
	} else {
		fmt.Fprintf(out, "Kept the existing configuration %s\n", g.config)
	}
	fmt.Fprintf(out, "Root fingerprint (clients pin it with --fingerprint):\n%s\n", fp)
	return nil
}

func (o initOptions) apply(cfg *config.Config) error {
	var err error
	set := func(s string, f func(string) error) {
		if s != "" && err == nil {
			err = f(s)
		}
	}
	set(o.stateDir, func(s string) error { cfg.StateDir = s; return nil })
	set(o.listen, func(s string) error {
		a, e := netip.ParseAddrPort(s)
		cfg.Listen.Addresses = []netip.AddrPort{a}
		return wrapFlag("--listen", e)
	})
	set(o.ipv6, func(s string) error { a, e := netip.ParseAddr(s); cfg.TEP.IPv6 = a; return wrapFlag("--ipv6", e) })
	set(o.innerV4, func(s string) error {
		a, e := netip.ParseAddr(s)
		cfg.TEP.InnerV4 = a
		return wrapFlag("--inner-v4", e)
	})
	set(o.pool, func(s string) error {
		p, e := netip.ParsePrefix(s)
		cfg.Pools = []config.Pool{{Name: "default", Prefixes: []netip.Prefix{p}}}
		return wrapFlag("--pool", e)
	})
	set(o.socket, func(s string) error { cfg.Admin.Socket = s; return nil })
	if len(o.names) > 0 {
		cfg.CA.ServerNames = o.names
	}
	if len(o.ips) > 0 {
		cfg.CA.ServerIPs = nil
		for _, s := range o.ips {
			a, e := netip.ParseAddr(s)
			if e != nil {
				return wrapFlag("--server-ip", e)
			}
			cfg.CA.ServerIPs = append(cfg.CA.ServerIPs, a)
		}
	}
	if o.plain {
		cfg.TEP.PlainTransport = true
		cfg.Listen.PlainTSP = true
		cfg.Policy.Default.Transports = []string{"v4v6", "v4anyv6"}
	}
	return err
}

func wrapFlag(flag string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	return nil
}

// writeConfig writes a commented configuration file with cfg's values (mode 0600).
func writeConfig(path string, cfg config.Config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	if err := configTemplate.Execute(&b, cfg); err != nil {
		return err
	}
	if _, err := config.Parse([]byte(b.String())); err != nil {
		return fmt.Errorf("generated configuration does not validate (a bug): %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting it", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var configTemplate = template.Must(template.New("gateway.yaml").Funcs(template.FuncMap{
	"join": func(v any) string {
		var parts []string
		switch xs := v.(type) {
		case []netip.AddrPort:
			for _, x := range xs {
				parts = append(parts, `"`+x.String()+`"`)
			}
		case []netip.Prefix:
			for _, x := range xs {
				parts = append(parts, x.String())
			}
		case []netip.Addr:
			for _, x := range xs {
				parts = append(parts, x.String())
			}
		case []string:
			parts = xs
		}
		return "[" + strings.Join(parts, ", ") + "]"
	},
}).Parse(`# dstm-gateway configuration. Every field is documented in docs/configuration.md.
# Check it with: dstm-gateway check-config -c THIS_FILE

# Where the CA, its database and the lease store live (mode 0700).
state_dir: {{.StateDir}}

listen:
  # One port for everything: TCP (TSP-SSL, enrollment, plain TSP) and UDP (TSP, DTLS).
  addresses: {{join .Listen.Addresses}}
  udp: {{.Listen.UDP}}
  # Plain TSP over TCP/UDP without TLS, for legacy clients such as gogoc on trusted networks.
  plain_tsp: {{.Listen.PlainTSP}}

tep:
  # The gateway's outer IPv6 address: named in offers, and the plain v4v6 transport binds it.
{{- if .TEP.IPv6.IsValid}}
  ipv6: {{.TEP.IPv6}}
{{- else}}
  # ipv6: 2001:db8::1
{{- end}}
  # The gateway's inner IPv4 address on the TUN device (also the keepalive target).
  inner_v4: {{.TEP.InnerV4}}
  device: {{.TEP.Device}}
  mtu: {{.TEP.MTU}}
  # Classic DSTM IPv4-in-IPv6 (IP protocol 4): unencrypted, for trusted networks only.
  plain_transport: {{.TEP.PlainTransport}}
  # Set net.ipv4.ip_forward=1 at start instead of refusing to run without it.
  enable_forwarding: {{.TEP.EnableForwarding}}
  keepalive: {{.TEP.Keepalive.D}}

pools:
{{- range .Pools}}
  - name: {{.Name}}
    prefixes: {{join .Prefixes}}
{{- end}}

leases:
  offer_timeout: {{.Leases.OfferTimeout.D}}
  lifetime: {{.Leases.Lifetime.D}}
  # How long a released address stays reserved for its identity (sticky addresses).
  hold_time: {{.Leases.HoldTime.D}}
  max_sessions: {{.Leases.MaxSessions}}
  on_limit: {{.Leases.OnLimit}}     # replace_oldest | refuse
  on_revoke: {{.Leases.OnRevoke}}   # release | hold

tsp:
  anonymous: {{.TSP.Anonymous}}
  digest_md5: {{.TSP.DigestMD5}}
  plain: {{.TSP.Plain}}    # off | tls_only | always
  # passwords: /etc/dstm/htdigest   # htdigest file for PLAIN and DIGEST-MD5 (dstm-gateway passwd)
  realm: {{.TSP.Realm}}
  handshake_timeout: {{.TSP.HandshakeTimeout.D}}
  max_handshakes: {{.TSP.MaxHandshakes}}
  max_sessions_per_source: {{.TSP.MaxSessionsPerSource}}
  udp_idle_timeout: {{.TSP.UDPIdleTimeout.D}}

ca:
  server_names: {{join .CA.ServerNames}}
  server_ips: {{join .CA.ServerIPs}}
  client_cert_lifetime: {{.CA.ClientCertLifetime.D}}
  token_ttl: {{.CA.TokenTTL.D}}

policy:
  unknown: default    # default | refuse
  default:
{{- if .Policy.Default.Transports}}
    transports: {{join .Policy.Default.Transports}}
{{- else}}
    # transports: [v4anyv6]     # v4v6 (plain) must be allowed explicitly
{{- end}}
    # routes: [10.0.0.0/8]      # split tunnel; empty = full tunnel
    # dns: [10.0.0.53]
  # groups:
  #   staff: {pool: default, routes: [10.0.0.0/8]}
  # identities:
  #   alice@corp.example: {groups: [staff], static_v4: 100.64.0.10}

log:
  level: {{.Log.Level}}
  format: {{.Log.Format}}   # auto | json | console

metrics:
  listen: "{{.Metrics.Listen}}"   # e.g. "127.0.0.1:9653"; empty = off
  pprof: false                    # true: Go runtime profiles under /debug/pprof/ on that listener

admin:
  socket: {{.Admin.Socket}}

# The web console (docs/console.md): operators (sso.admin_groups, or the identities below by SSO
# or by an admin client certificate of this CA) see sessions, leases, events and health and can
# kick, revoke and issue tokens; users signed in by SSO see and revoke their own devices.
# console:
#   listen: "[::]:8443"
#   url: https://gw.corp.example:8443   # what browsers use; ca.server_names must name its host
#   client_id: dstm-console             # with sso: the console's confidential client at the provider
#   client_secret_file: /etc/dstm/console.secret
#   admins: [alice@corp.example]
`))
