package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type fakeSessions map[string]int

func (f fakeSessions) SessionCounts() map[string]int { return f }

type fakeLeases []LeaseCount

func (f fakeLeases) LeaseCounts() []LeaseCount { return f }

type fakeDataplane DataplaneSnapshot

func (f fakeDataplane) Dataplane() DataplaneSnapshot { return DataplaneSnapshot(f) }

func TestStateSources(t *testing.T) {
	leases := fakeLeases{
		{Pool: "corp", State: "active", N: 3},
		{Pool: "corp", State: "held", N: 1},
		{Pool: "corp", State: "active", N: 2}, // duplicate: summed
		{Pool: "guest", State: "free", N: 254},
	}
	sessions := fakeSessions{"v4dtlsv6": 4, "v4tlsv6": 1, "v4v6": 0}
	dp := fakeDataplane{
		Traffic: []Traffic{
			{Direction: DirectionIn, Transport: "v4dtlsv6", Packets: 10, Bytes: 1000},
			{Direction: DirectionOut, Transport: "v4dtlsv6", Packets: 20, Bytes: 30000},
			{Direction: DirectionIn, Transport: "v4dtlsv6", Packets: 1, Bytes: 60}, // duplicate: summed
			{Direction: DirectionIn, Transport: "v4v6", Packets: 1 << 40, Bytes: 1 << 50},
		},
		Drops: map[string]uint64{"no_session": 7, "spoofed_source": 2},
		Denied: []Denied{
			{Rule: `policy.groups["eng"].access`, Direction: "outbound", Packets: 5},
			{Rule: `policy.groups["eng"].access`, Direction: "outbound", Packets: 1}, // duplicate: summed
			{Rule: "policy.default.access", Direction: "inbound", Packets: 3},
		},
		ConntrackEvictions: 9,
		ParkedReaders:      3,
	}
	tests := []struct {
		name     string
		leases   LeaseStats
		sessions SessionStats
		dp       DataplaneStats
		metrics  []string
		want     string
	}{
		{
			name:    "no sources",
			metrics: []string{"dstm_sessions", "dstm_leases", "dstm_packets_total", "dstm_dropped_packets_total"},
			want:    "",
		},
		{
			name:     "sessions",
			sessions: sessions,
			metrics:  []string{"dstm_sessions"},
			want: `# HELP dstm_sessions Live sessions by data transport.
# TYPE dstm_sessions gauge
dstm_sessions{transport="v4dtlsv6"} 4
dstm_sessions{transport="v4tlsv6"} 1
dstm_sessions{transport="v4v6"} 0
`,
		},
		{
			name:    "leases summed by pool and state",
			leases:  leases,
			metrics: []string{"dstm_leases"},
			want: `# HELP dstm_leases Leases by pool and state.
# TYPE dstm_leases gauge
dstm_leases{pool="corp",state="active"} 5
dstm_leases{pool="corp",state="held"} 1
dstm_leases{pool="guest",state="free"} 254
`,
		},
		{
			name:    "dataplane counters",
			dp:      dp,
			metrics: []string{"dstm_packets_total", "dstm_bytes_total", "dstm_dropped_packets_total"},
			want: `# HELP dstm_bytes_total Tunnelled IPv4 bytes (inner packets) by direction and transport.
# TYPE dstm_bytes_total counter
dstm_bytes_total{direction="in",transport="v4dtlsv6"} 1060
dstm_bytes_total{direction="in",transport="v4v6"} 1.125899906842624e+15
dstm_bytes_total{direction="out",transport="v4dtlsv6"} 30000
# HELP dstm_dropped_packets_total Packets dropped by the data plane, by reason.
# TYPE dstm_dropped_packets_total counter
dstm_dropped_packets_total{reason="no_session"} 7
dstm_dropped_packets_total{reason="spoofed_source"} 2
# HELP dstm_packets_total Tunnelled IPv4 packets by direction and transport.
# TYPE dstm_packets_total counter
dstm_packets_total{direction="in",transport="v4dtlsv6"} 11
dstm_packets_total{direction="in",transport="v4v6"} 1.099511627776e+12
dstm_packets_total{direction="out",transport="v4dtlsv6"} 20
`,
		},
		{
			name:    "access rules",
			dp:      dp,
			metrics: []string{"dstm_access_denied_packets_total", "dstm_conntrack_evictions_total", "dstm_parked_readers"},
			want: `# HELP dstm_access_denied_packets_total Packets denied by access rules, by access block (its field path in the policy) and direction.
# TYPE dstm_access_denied_packets_total counter
dstm_access_denied_packets_total{direction="inbound",rule="policy.default.access"} 3
dstm_access_denied_packets_total{direction="outbound",rule="policy.groups[\"eng\"].access"} 6
# HELP dstm_conntrack_evictions_total Flows evicted from full per-session connection tables (access rules).
# TYPE dstm_conntrack_evictions_total counter
dstm_conntrack_evictions_total 9
# HELP dstm_parked_readers Established TCP and TLS sessions idle now, whose reader waits without a goroutine.
# TYPE dstm_parked_readers gauge
dstm_parked_readers 3
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.SetSources(tt.leases, tt.sessions, tt.dp)
			if got := gatherText(t, m.Registry(), tt.metrics...); got != tt.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestSetSourcesReplaces(t *testing.T) {
	m := New()
	m.SetSources(nil, fakeSessions{"v4v6": 2}, nil)
	m.SetSources(nil, fakeSessions{"v4tlsv6": 5}, nil)
	body := scrape(t, m)
	if !strings.Contains(body, `dstm_sessions{transport="v4tlsv6"} 5`) || strings.Contains(body, `transport="v4v6"`) {
		t.Fatalf("scrape after SetSources does not reflect the new source:\n%s", grep(body, "dstm_sessions"))
	}
	m.SetSources(nil, nil, nil)
	if body := scrape(t, m); strings.Contains(body, "dstm_sessions{") {
		t.Fatal("sessions still exposed after removing the source")
	}
}

// TestBadLabelValueDoesNotFailScrape checks that a source returning a label
// value that is not valid UTF-8 costs only that series: the collector does not
// panic and the handler still serves everything else.
func TestBadLabelValueDoesNotFailScrape(t *testing.T) {
	m := New()
	m.SetSources(nil, fakeSessions{"\xff\xfe": 1, "v4v6": 3}, nil)
	if _, err := m.Registry().Gather(); err == nil {
		t.Fatal("Gather accepted an invalid UTF-8 label value")
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	body := get(t, srv.URL, http.StatusOK)
	if !strings.Contains(body, `dstm_sessions{transport="v4v6"} 3`) || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("valid series missing after a bad one:\n%s", grep(body, "dstm_sessions"))
	}
}

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func BenchmarkScrape(b *testing.B) {
	m := New()
	var leases fakeLeases
	for p := range 10 {
		for _, s := range []string{"offered", "active", "held", "free"} {
			leases = append(leases, LeaseCount{Pool: fmt.Sprintf("pool%d", p), State: s, N: p})
		}
	}
	m.SetSources(leases, fakeSessions{"v4v6": 1, "v4dtlsv6": 2, "v4tlsv6": 3}, fakeDataplane{
		Traffic: []Traffic{{Direction: DirectionIn, Transport: "v4v6", Packets: 1, Bytes: 2}},
		Drops:   map[string]uint64{"no_session": 1},
	})
	for b.Loop() {
		if _, err := m.Registry().Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

type fakeCluster struct{ owner bool }

func (f *fakeCluster) ClusterOwner() (string, bool) { return "gw-2", f.owner }

func TestClusterOwner(t *testing.T) {
	m := New()
	if body := scrape(t, m); strings.Contains(body, "dstm_cluster_owner{") {
		t.Fatal("dstm_cluster_owner exposed in single-node mode")
	}
	c := &fakeCluster{owner: true}
	m.SetCluster(c)
	for _, tc := range []struct {
		owner bool
		want  string
	}{{true, `dstm_cluster_owner{node="gw-2"} 1`}, {false, `dstm_cluster_owner{node="gw-2"} 0`}} {
		c.owner = tc.owner
		if body := scrape(t, m); !strings.Contains(body, tc.want) {
			t.Fatalf("want %s in:\n%s", tc.want, grep(body, "dstm_cluster"))
		}
	}
}

type fakeBGP struct{}

func (fakeBGP) BGPState() (int, map[string]bool) {
	return 3, map[string]bool{"198.51.100.2": true, "198.51.100.3": false}
}

func TestBGPGauges(t *testing.T) {
	m := New()
	if body := scrape(t, m); strings.Contains(body, "dstm_bgp_") {
		t.Fatal("dstm_bgp_* exposed without bgp")
	}
	m.SetBGP(fakeBGP{})
	body := scrape(t, m)
	for _, want := range []string{"dstm_bgp_announced_prefixes 3", `dstm_bgp_neighbor_up{neighbor="198.51.100.2"} 1`, `dstm_bgp_neighbor_up{neighbor="198.51.100.3"} 0`} {
		if !strings.Contains(body, want) {
			t.Fatalf("want %s in:\n%s", want, grep(body, "dstm_bgp"))
		}
	}
}
