// Package config is the gateway's one typed configuration file: loading with unknown keys refused,
// defaults, complete validation before anything touches the host, and the effective configuration
// printed by `dstm-gateway check-config`. Every field is documented in docs/configuration.md.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/sso"
)

// Config is the whole gateway configuration (gateway.yaml).
type Config struct {
	// Roles are what this node runs: "control" (TSP, leases, CA, admin), "tep" (TUN,
	// transports, route announcement), or both (the default). Split roles need store.etcd.
	Roles    []string `yaml:"roles,omitempty"`
	StateDir string   `yaml:"state_dir"`
	// MemoryLimit is the gateway process's soft memory limit (Go's runtime/debug
	// SetMemoryLimit); zero: none, beyond GOMEMLIMIT.
	MemoryLimit ByteSize          `yaml:"memory_limit,omitempty"`
	Listen      Listen            `yaml:"listen"`
	TEP         TEP               `yaml:"tep"`
	Pools       []Pool            `yaml:"pools"`
	Leases      Leases            `yaml:"leases"`
	TSP         TSP               `yaml:"tsp"`
	CA          CA                `yaml:"ca"`
	Policy      auth.PolicyConfig `yaml:"policy"`
	Log         Log               `yaml:"log"`
	Metrics     Metrics           `yaml:"metrics"`
	Admin       Admin             `yaml:"admin"`
	Store       Store             `yaml:"store,omitempty"`
	BGP         *BGP              `yaml:"bgp,omitempty"`
	// SSO lets users enroll by signing in at the company's OpenID provider
	// (docs/sso.md); absent: enrollment by one-time tokens only.
	SSO *sso.Config `yaml:"sso,omitempty"`
	// Console is the web console (docs/console.md); absent: none.
	Console *Console `yaml:"console,omitempty"`
}

// Node roles (Config.Roles).
const (
	RoleControl = "control"
	RoleTEP     = "tep"
)

// Has says whether this node runs role (every role when Roles is empty).
func (c *Config) Has(role string) bool {
	return len(c.Roles) == 0 || slices.Contains(c.Roles, role)
}

// Split says whether this node runs one role only (the other runs on other nodes).
func (c *Config) Split() bool { return !c.Has(RoleControl) || !c.Has(RoleTEP) }

// BGP configures the embedded BGP speaker that announces the gateway's routes to the site's
// routers (docs/operations.md, "Routing"); absent: nothing is announced.
type BGP struct {
	LocalAS  uint32     `yaml:"local_as"`
	RouterID netip.Addr `yaml:"router_id"`
	// Announce is "pools" (the pool prefixes; the single-node default) or "leases" (a /32 per
	// active lease of this gateway's sessions; the cluster default).
	Announce    string        `yaml:"announce"`
	NextHop     netip.Addr    `yaml:"next_hop"`
	Communities []string      `yaml:"communities"`
	RestartTime *Duration     `yaml:"restart_time"`
	Neighbors   []BGPNeighbor `yaml:"neighbors"`
}

// BGPNeighbor is one site router.
type BGPNeighbor struct {
	Address      netip.Addr `yaml:"address"`
	AS           uint32     `yaml:"as"`
	Port         uint16     `yaml:"port"`
	PasswordFile string     `yaml:"password_file"`
}

// Announce modes of BGP.Announce.
const (
	AnnouncePools  = "pools"
	AnnounceLeases = "leases"
)

// AnnounceMode is BGP.Announce with its default: leases in cluster mode, else pools.
func (c *Config) AnnounceMode() string {
	if c.BGP != nil && c.BGP.Announce != "" {
		return c.BGP.Announce
	}
	if c.Store.Etcd != nil {
		return AnnounceLeases
	}
	return AnnouncePools
}

// BGPRestartTime is BGP.RestartTime with its default: 120 s announcing pools (a restart does
// not flap the routes), off announcing leases (a dead gateway's /32s must not linger at the
// routers while the survivors announce them).
func (c *Config) BGPRestartTime() time.Duration {
	if c.BGP != nil && c.BGP.RestartTime != nil {
		return c.BGP.RestartTime.D()
	}
	if c.AnnounceMode() == AnnounceLeases {
		return 0
	}
	return 120 * time.Second
}

// Store selects the lease store: the embedded bbolt file in state_dir (single node, the
// default), or etcd shared by the gateways of a cluster.
type Store struct {
	Etcd *Etcd `yaml:"etcd,omitempty"`
}

// Etcd configures the shared store of cluster mode.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"`
	// Name is this gateway's name in the cluster (the owner of its sessions' leases);
	// empty: the host name.
	Name           string   `yaml:"name"`
	Prefix         string   `yaml:"prefix"`
	TTL            Duration `yaml:"ttl"`
	DialTimeout    Duration `yaml:"dial_timeout"`
	RequestTimeout Duration `yaml:"request_timeout"`
	MaxTxnOps      int      `yaml:"max_txn_ops"`
	TLS            *EtcdTLS `yaml:"tls"`
	Username       string   `yaml:"username"`
	PasswordFile   string   `yaml:"password_file"`
}

// EtcdTLS is the client side of TLS to etcd: the CA that signed the members' certificates,
// and an optional client certificate for etcd's --client-cert-auth.
type EtcdTLS struct {
	CA         string `yaml:"ca"`
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
	ServerName string `yaml:"server_name"`
}

// Listen says where the one TSP port is served (TCP and UDP on the same port).
type Listen struct {
	Addresses []netip.AddrPort `yaml:"addresses"`
	PlainTSP  bool             `yaml:"plain_tsp"`
	UDP       bool             `yaml:"udp"`
}

// TEP is the tunnel end point: the inside TUN device and the outside IPv6 endpoint.
type TEP struct {
	IPv6             netip.Addr   `yaml:"ipv6"`
	InnerV4          netip.Addr   `yaml:"inner_v4"`
	Device           string       `yaml:"device"`
	MTU              int          `yaml:"mtu"`
	PlainTransport   bool         `yaml:"plain_transport"`
	EnableForwarding bool         `yaml:"enable_forwarding"`
	DNSv6            []netip.Addr `yaml:"dns_v6"`
	DNSv4            []netip.Addr `yaml:"dns_v4"`
	Keepalive        Duration     `yaml:"keepalive"`
}

// Pool is one IPv4 address pool.
type Pool struct {
	Name                    string         `yaml:"name"`
	Prefixes                []netip.Prefix `yaml:"prefixes"`
	Ranges                  []Range        `yaml:"ranges"`
	Exclude                 []netip.Prefix `yaml:"exclude"`
	ExcludeNetworkBroadcast *bool          `yaml:"exclude_network_broadcast"`
}

// Range is an inclusive IPv4 address range.
type Range struct {
	First netip.Addr `yaml:"first"`
	Last  netip.Addr `yaml:"last"`
}

// Leases holds the lease lifetimes and the per-identity session limit.
type Leases struct {
	OfferTimeout Duration `yaml:"offer_timeout"`
	Lifetime     Duration `yaml:"lifetime"`
	HoldTime     Duration `yaml:"hold_time"`
	MaxSessions  int      `yaml:"max_sessions"`
	OnLimit      string   `yaml:"on_limit"`
	OnRevoke     string   `yaml:"on_revoke"`
}

// TSP holds the control-plane policy: mechanisms, credentials and limits.
type TSP struct {
	Anonymous            bool     `yaml:"anonymous"`
	DigestMD5            bool     `yaml:"digest_md5"`
	Plain                string   `yaml:"plain"`
	Passwords            string   `yaml:"passwords"`
	Realm                string   `yaml:"realm"`
	HandshakeTimeout     Duration `yaml:"handshake_timeout"`
	MaxHandshakes        int      `yaml:"max_handshakes"`
	MaxSessionsPerSource int      `yaml:"max_sessions_per_source"`
	ConnectionRate       int      `yaml:"connection_rate"`
	UDPIdleTimeout       Duration `yaml:"udp_idle_timeout"`
}

// CA configures the embedded certificate authority.
type CA struct {
	ServerNames        []string     `yaml:"server_names"`
	ServerIPs          []netip.Addr `yaml:"server_ips"`
	ClientCertLifetime Duration     `yaml:"client_cert_lifetime"`
	TokenTTL           Duration     `yaml:"token_ttl"`
}

// Log configures zerolog output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Metrics configures the Prometheus listener; an empty Listen turns it off.
type Metrics struct {
	Listen string `yaml:"listen"`
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the metrics listener.
	Pprof bool `yaml:"pprof"`
}

// Admin configures the admin API's unix socket.
type Admin struct {
	Socket string `yaml:"socket"`
}

// Plain-mechanism policies.
const (
	PlainOff     = "off"
	PlainTLSOnly = "tls_only"
	PlainAlways  = "always"
)

// Default returns the embedded defaults: a gateway that runs with no file at all.
func Default() Config {
	return Config{
		StateDir: "/var/lib/dstm",
		Listen: Listen{
			Addresses: []netip.AddrPort{netip.MustParseAddrPort("[::]:3653")},
			UDP:       true,
		},
		TEP: TEP{
			InnerV4:        netip.MustParseAddr("100.64.0.1"),
			Device:         "dstm0",
			MTU:            1400,
			PlainTransport: false,
			Keepalive:      Duration(30 * time.Second),
		},
		Pools: []Pool{{
			Name:     "default",
			Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")},
		}},
		Leases: Leases{
			OfferTimeout: Duration(30 * time.Second),
			Lifetime:     Duration(time.Hour),
			HoldTime:     Duration(24 * time.Hour),
			MaxSessions:  1,
			OnLimit:      "replace_oldest",
			OnRevoke:     "release",
		},
		TSP: TSP{
			Plain:                PlainTLSOnly,
			Realm:                "dstm",
			HandshakeTimeout:     Duration(10 * time.Second),
			MaxHandshakes:        256,
			MaxSessionsPerSource: 16,
			ConnectionRate:       50,
			UDPIdleTimeout:       Duration(2 * time.Minute),
		},
		CA: CA{
			ServerNames:        []string{"localhost"},
			ClientCertLifetime: Duration(24 * time.Hour),
			TokenTTL:           Duration(time.Hour),
		},
		Policy: auth.PolicyConfig{Unknown: "default"},
		Log:    Log{Level: "info", Format: "auto"},
		Admin:  Admin{Socket: "/run/dstm/admin.sock"},
	}
}

// Load reads a configuration file over the defaults. Unknown keys are errors.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over the defaults and validates the result completely.
func Parse(b []byte) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	cfg.Policy.Pools = cfg.PoolPrefixes() // for access rules that name pools
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Marshal renders the effective configuration as YAML.
func (c Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// Duration is a time.Duration written as "30s", "1h" in YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as 30s or 1h", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 30s, 5m, 1h)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a size in bytes, written with a binary unit: 512MiB, 2GiB.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	n      int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// UnmarshalYAML parses a number of bytes with its unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err == nil {
		for _, u := range byteUnits {
			num, ok := strings.CutSuffix(s, u.suffix)
			if !ok {
				continue
			}
			v, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err == nil && v >= 0 && v <= math.MaxInt64/u.n {
				*b = ByteSize(v * u.n)
				return nil
			}
			break
		}
	}
	return fmt.Errorf("line %d: %q is not a size (e.g. 512MiB, 2GiB)", n.Line, n.Value)
}

// MarshalYAML writes the size in the largest unit that divides it.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

func (b ByteSize) String() string {
	for _, u := range byteUnits {
		if int64(b)%u.n == 0 && (b != 0 || u.n == 1) {
			return strconv.FormatInt(int64(b)/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// MarshalYAML writes the duration in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }
