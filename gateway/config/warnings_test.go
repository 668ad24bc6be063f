package config

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestWarnings(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // settings warned about, in order
	}{
		{"defaults", func(*Config) {}, nil},
		{"gogoc setup with keepalive", func(c *Config) {
			c.Listen.PlainTSP, c.TEP.PlainTransport = true, true
		}, []string{"tep.keepalive"}},
		{"gogoc setup over UDP only", func(c *Config) { c.TEP.PlainTransport = true }, []string{"tep.keepalive"}},
		{"gogoc setup without keepalive", func(c *Config) {
			c.Listen.PlainTSP, c.TEP.PlainTransport = true, true
			c.TEP.Keepalive = 0
		}, nil},
		{"no legacy listener", func(c *Config) {
			c.Listen.UDP, c.TEP.PlainTransport = false, true
		}, nil},
		{"PLAIN always with passwords", func(c *Config) {
			c.Listen.PlainTSP, c.TSP.Plain, c.TSP.Passwords = true, PlainAlways, "/etc/dstm/passwords"
		}, []string{"tsp.plain"}},
		{"PLAIN always without passwords", func(c *Config) { c.TSP.Plain = PlainAlways }, nil},
		{"PLAIN always, TLS only listeners", func(c *Config) {
			c.Listen.UDP, c.TSP.Plain, c.TSP.Passwords = false, PlainAlways, "/etc/dstm/passwords"
		}, nil},
		{"anonymous", func(c *Config) { c.TSP.Anonymous = true }, []string{"tsp.anonymous"}},
		{"split routes without access rules", func(c *Config) {
			c.Policy.Default.Routes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		}, []string{"policy.default"}},
		{"all three", func(c *Config) {
			c.Listen.PlainTSP, c.TEP.PlainTransport, c.TEP.Keepalive = true, true, Duration(5*time.Second)
			c.TSP.Plain, c.TSP.Passwords, c.TSP.Anonymous = PlainAlways, "/p", true
		}, []string{"tep.keepalive", "tsp.plain", "tsp.anonymous"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(&c)
			var got []string
			for _, w := range c.Warnings() {
				if w.Text == "" {
					t.Errorf("%s: empty text", w.Setting)
				}
				got = append(got, w.Setting)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("warnings %v, want %v", got, tc.want)
			}
		})
	}
}
