package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
)

// now is the reference time of the golden files.
func goldenNow() time.Time { return t0.Add(time.Hour) }

func TestGoldenTables(t *testing.T) {
	st := admin.Status{
		Version: "v0.1.0", Started: t0.Add(-50 * time.Hour), Listen: []string{"tcp [::]:3653", "udp [::]:3653"}, Sessions: 3,
		Pools: []admin.PoolStatus{
			{Name: "corp", Ranges: []string{"192.0.2.0/24", "!192.0.2.1"}, Size: 253, Offered: 1, Active: 2, Held: 1, Static: 1, Free: 248},
			{Name: "empty", Size: 0},
		},
	}
	cst := st
	cst.Cluster = &admin.Cluster{Node: "gw-2", Endpoints: []string{"https://e1:2379", "https://e2:2379"}, Owner: true,
		ValidUntil: goldenNow().Add(4 * time.Second), Members: []admin.Member{{Name: "gw-1"}, {Name: "gw-2"}},
		Warnings: []string{"pools differ from those of cluster member gw-1: clients moving between the two may not keep their addresses"}}
	lost := st
	lost.Cluster = &admin.Cluster{Node: "gw-2", Endpoints: []string{"http://e1:2379"}, Error: "lease: store unavailable: context deadline exceeded"}
	bst := st
	bst.BGP = &admin.BGP{Announce: "pools", Announced: 1, Neighbors: []admin.BGPNeighbor{
		{Address: "198.51.100.2", AS: 65000, State: "established", Since: goldenNow().Add(-time.Hour)},
		{Address: "198.51.100.3", AS: 65000, State: "active"}}, LastError: "bgp: announce 100.64.0.0/24: no route"}
	clusterLeases := fixtureLeases()
	clusterLeases[0].Gateway = "gw-1"
	tests := []struct {
		name  string
		write func(*bytes.Buffer) error
	}{
		{"status_cluster", func(b *bytes.Buffer) error { return writeStatus(b, cst, goldenNow()) }},
		{"status_bgp", func(b *bytes.Buffer) error { return writeStatus(b, bst, goldenNow()) }},
		{"status_cluster_lost", func(b *bytes.Buffer) error { return writeStatus(b, lost, goldenNow()) }},
		{"leases_cluster", func(b *bytes.Buffer) error { return writeLeasesTable(b, clusterLeases, goldenNow()) }},
		{"leases", func(b *bytes.Buffer) error { return writeLeasesTable(b, fixtureLeases(), goldenNow()) }},
		{"leases_empty", func(b *bytes.Buffer) error { return writeLeasesTable(b, nil, goldenNow()) }},
		{"sessions", func(b *bytes.Buffer) error { return writeSessionsTable(b, fixtureSessions(), goldenNow()) }},
		{"status", func(b *bytes.Buffer) error { return writeStatus(b, st, goldenNow()) }},
		{"token", func(b *bytes.Buffer) error {
			return writeTokenResult(b, admin.TokenResult{Token: "c0ffee", Identity: "alice@corp", Fingerprint: "5e8a9c", Expires: goldenNow().Add(10 * time.Minute)}, goldenNow())
		}},
		{"revoke", func(b *bytes.Buffer) error {
			return writeRevokeResult(b, admin.RevokeResult{Serials: []string{"1001", "1002"}, Sessions: 1})
		}},
		{"revoke_none", func(b *bytes.Buffer) error { return writeRevokeResult(b, admin.RevokeResult{}) }},
		{"leases_json", func(b *bytes.Buffer) error { return writeJSON(b, fixtureLeases()[:2]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.write(&b); err != nil {
				t.Fatal(err)
			}
			goldenBytes(t, tt.name, b.Bytes())
		})
	}
}

func goldenBytes(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update to accept):\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestTablesDoNotReorderInput(t *testing.T) {
	leases := fixtureLeases()
	before := slices.Clone(leases)
	if err := writeLeasesTable(&bytes.Buffer{}, leases, goldenNow()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(leases, before) {
		t.Fatal("WriteLeasesTable reordered the caller's slice")
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	in := fixtureSessions()
	if err := writeJSON(&b, in); err != nil {
		t.Fatal(err)
	}
	var out []admin.Session
	if err := json.Unmarshal(b.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

func TestHumanDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{999 * time.Millisecond, "0s"},
		{45 * time.Second, "45s"},
		{-45 * time.Second, "45s"},
		{time.Minute, "1m"},
		{4*time.Minute + 30*time.Second, "4m30s"},
		{59*time.Minute + 59*time.Second + 999*time.Millisecond, "59m59s"},
		{time.Hour, "1h"},
		{2*time.Hour + 5*time.Minute + 59*time.Second, "2h5m"},
		{24 * time.Hour, "1d"},
		{76*time.Hour + 30*time.Minute, "3d4h"},
	} {
		if got := humanDuration(tt.d); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for _, tt := range []struct {
		n    uint64
		want string
	}{
		{0, "0B"}, {1023, "1023B"}, {1024, "1.0KiB"}, {1536, "1.5KiB"},
		{5 << 30, "5.0GiB"}, {1<<60 + 1<<59, "1.5EiB"}, {^uint64(0), "16.0EiB"},
	} {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestCell(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", "-"}, {"alice@corp", "alice@corp"}, {"guest 1", `"guest 1"`}, {"a\tb", `"a\tb"`}, {"x\x1by", `"x\x1by"`},
	} {
		if got := cell(tt.in); got != tt.want {
			t.Errorf("cell(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// t0 is the reference time of the fixtures.
var t0 = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

func fixtureLeases() []admin.Lease {
	return []admin.Lease{
		{Addr: "192.0.2.10", Pool: "corp", Identity: "alice@corp", State: "active", Transport: "v4dtlsv6",
			Session: "s-a1", Endpoint: "[2001:db8::a]:40000", Expires: t0.Add(90 * time.Minute)},
		{Addr: "192.0.2.9", Pool: "corp", Identity: "bob@corp", State: "active", Transport: "v4tlsv6",
			Session: "s-b1", Endpoint: "[2001:db8::b]:3653", Expires: t0.Add(2 * time.Hour)},
		{Addr: "192.0.2.100", Pool: "corp", Identity: "carol@corp", State: "held", Expires: t0.Add(65 * time.Minute)},
		{Addr: "192.0.2.2", Pool: "corp", Identity: "printer@corp", State: "active", Transport: "v4v6",
			Session: "odd/id%1", Endpoint: "2001:db8::2", Static: true},
		{Addr: "198.51.100.7", Pool: "guest", Identity: "guest 1", State: "offered", Expires: t0.Add(59*time.Minute + 30*time.Second)},
	}
}

func fixtureSessions() []admin.Session {
	return []admin.Session{
		{ID: "s-b1", Identity: "bob@corp", Lease: "192.0.2.9", Transport: "v4tlsv6", Endpoint: "[2001:db8::b]:3653",
			Mechanism: "EXTERNAL", Since: t0.Add(-26 * time.Hour), PacketsIn: 1200, PacketsOut: 3400, BytesIn: 98304, BytesOut: 5 << 30},
		{ID: "s-a1", Identity: "alice@corp", Lease: "192.0.2.10", Transport: "v4dtlsv6", Endpoint: "[2001:db8::a]:40000",
			Mechanism: "EXTERNAL", Since: t0.Add(59 * time.Minute), PacketsIn: 3, PacketsOut: 0, BytesIn: 180, BytesOut: 0},
		{ID: "odd/id%1", Identity: "printer@corp", Lease: "192.0.2.2", Transport: "v4v6", Endpoint: "2001:db8::2",
			Mechanism: "PLAIN", Since: t0.Add(-90 * time.Second), PacketsIn: 10, PacketsOut: 10, BytesIn: 1536, BytesOut: 1 << 20},
	}
}
