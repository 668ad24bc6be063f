package config

import (
	"net/netip"
	"testing"
)

func TestRangePrefixes(t *testing.T) {
	tests := []struct {
		first, last string
		want        []string
	}{
		{"10.0.0.0", "10.0.0.255", []string{"10.0.0.0/24"}},
		{"10.0.0.5", "10.0.0.5", []string{"10.0.0.5/32"}},
		{"10.0.0.1", "10.0.0.6", []string{"10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"}},
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"255.255.255.254", "255.255.255.255", []string{"255.255.255.254/31"}},
	}
	for _, tt := range tests {
		got := RangePrefixes(netip.MustParseAddr(tt.first), netip.MustParseAddr(tt.last))
		if len(got) != len(tt.want) {
			t.Fatalf("%s-%s: %v, want %v", tt.first, tt.last, got, tt.want)
		}
		for i := range got {
			if got[i].String() != tt.want[i] {
				t.Fatalf("%s-%s: %v, want %v", tt.first, tt.last, got, tt.want)
			}
		}
	}
}
