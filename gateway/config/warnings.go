package config

import "github.com/dstmgw/dstm/auth"

// Warning is a valid setting with a known risk. `dstm-gateway check-config` prints the
// warnings and the gateway logs them at start; none of them stops the gateway.
type Warning struct {
	Setting string // the key, as in the file: "tep.keepalive"
	Text    string
}

// Warnings returns the risky settings of c, in a fixed order.
func (c *Config) Warnings() []Warning {
	var out []Warning
	// Plain TSP (TCP) and TSP over UDP are how legacy clients such as gogoc reach the gateway;
	// gogoc only speaks v4v6, which the plain transport serves.
	legacy := c.Listen.PlainTSP || c.Listen.UDP
	if legacy && c.TEP.PlainTransport && c.TEP.Keepalive > 0 {
		out = append(out, Warning{"tep.keepalive", "gogoc 1.2 corrupts its memory when a lease " +
			"expires while its keepalive runs, and crashes in its next session (docs/protocol.md, " +
			"\"gogoc\"); for gogoc clients set tep.keepalive: 0s, or leases.lifetime as long as acceptable"})
	}
	if legacy && c.TSP.Plain == PlainAlways && c.TSP.Passwords != "" {
		out = append(out, Warning{"tsp.plain", "PLAIN passwords cross the network unencrypted " +
			"over plain TSP and UDP (always); tls_only keeps them inside TLS"})
	}
	if c.TSP.Anonymous {
		out = append(out, Warning{"tsp.anonymous", "any client that reaches the TSP port gets a " +
			"lease, identified only by its IPv6 address"})
	}
	// The policy's own (access rules against routes, rules that never decide), when it is valid.
	if pol, err := auth.NewPolicy(c.Policy); err == nil {
		for _, w := range pol.Warnings(c.Policy) {
			out = append(out, Warning{w.Field, w.Text})
		}
	}
	return out
}
