package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// now is the reference time of the golden files.
func goldenNow() time.Time { return t0.Add(time.Hour) }

func TestGoldenTables(t *testing.T) {
	st := Status{
		Version: "v0.1.0", Started: t0.Add(-50 * time.Hour), Listen: []string{"tcp [::]:3653", "udp [::]:3653"}, Sessions: 3,
		Pools: []PoolStatus{
			{Name: "corp", Ranges: []string{"192.0.2.0/24", "!192.0.2.1"}, Size: 253, Offered: 1, Active: 2, Held: 1, Static: 1, Free: 248},
			{Name: "empty", Size: 0},
		},
	}
	tests := []struct {
		name  string
		write func(*bytes.Buffer) error
	}{
		{"leases", func(b *bytes.Buffer) error { return WriteLeasesTable(b, fixtureLeases(), goldenNow()) }},
		{"leases_empty", func(b *bytes.Buffer) error { return WriteLeasesTable(b, nil, goldenNow()) }},
		{"sessions", func(b *bytes.Buffer) error { return WriteSessionsTable(b, fixtureSessions(), goldenNow()) }},
		{"status", func(b *bytes.Buffer) error { return WriteStatus(b, st, goldenNow()) }},
		{"token", func(b *bytes.Buffer) error {
			return WriteTokenResult(b, TokenResult{Token: "c0ffee", Identity: "alice@corp", Fingerprint: "5e8a9c", Expires: goldenNow().Add(10 * time.Minute)}, goldenNow())
		}},
		{"revoke", func(b *bytes.Buffer) error {
			return WriteRevokeResult(b, RevokeResult{Serials: []string{"1001", "1002"}, Sessions: 1})
		}},
		{"revoke_none", func(b *bytes.Buffer) error { return WriteRevokeResult(b, RevokeResult{}) }},
		{"leases_json", func(b *bytes.Buffer) error { return WriteJSON(b, fixtureLeases()[:2]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.write(&b); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, b.Bytes())
		})
	}
}

func golden(t *testing.T, name string, got []byte) {
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
	if err := WriteLeasesTable(&bytes.Buffer{}, leases, goldenNow()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(leases, before) {
		t.Fatal("WriteLeasesTable reordered the caller's slice")
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	in := fixtureSessions()
	if err := WriteJSON(&b, in); err != nil {
		t.Fatal(err)
	}
	var out []Session
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
		if got := HumanDuration(tt.d); got != tt.want {
			t.Errorf("HumanDuration(%v) = %q, want %q", tt.d, got, tt.want)
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
		if got := HumanBytes(tt.n); got != tt.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", tt.n, got, tt.want)
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

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("boom"), ExitFailure},
		{&Error{Code: codeInternal}, ExitFailure},
		{&Error{Code: codeInvalid}, ExitUsage},
		{&Error{Code: codeNotFound}, ExitNotFound},
		{&Error{Code: codeUnavailable}, ExitUnavailable},
		{&DialError{Path: "p", Err: os.ErrNotExist}, ExitNotRunning},
	} {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
