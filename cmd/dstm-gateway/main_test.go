package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstmgw/dstm/gateway/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

// run executes the CLI with args and returns its output and exit code.
func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		out.WriteString("error: " + err.Error() + "\n")
		return out.String(), exitCode(err)
	}
	return out.String(), 0
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestInitWritesAValidConfigAndCA(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "gateway.yaml")
	out, code := run(t, "init", "-c", cfgPath, "--state-dir", filepath.Join(dir, "state"),
		"--listen", "[2001:db8::1]:3653", "--ipv6", "2001:db8::1", "--server-ip", "2001:db8::1",
		"--server-name", "gw.example", "--pool", "10.99.0.0/24", "--inner-v4", "10.99.0.1",
		"--admin-socket", filepath.Join(dir, "admin.sock"))
	if code != 0 {
		t.Fatalf("init exit %d:\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if fp := lines[len(lines)-1]; len(fp) != 64 {
		t.Fatalf("last line is not a fingerprint: %q", fp)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	if cfg.Pools[0].Prefixes[0].String() != "10.99.0.0/24" || cfg.TEP.IPv6.String() != "2001:db8::1" {
		t.Fatalf("flags not applied: %+v", cfg)
	}
	st, err := os.Stat(filepath.Join(dir, "state"))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode: %v %v", st.Mode(), err)
	}
	if out, code := run(t, "init", "-c", cfgPath); code == 0 {
		t.Fatalf("second init succeeded:\n%s", out)
	}
	checkConsoleExample(t, cfgPath)
}

// checkConsoleExample uncomments the console section of the file init wrote: with an sso
// section it must be a valid configuration.
func checkConsoleExample(t *testing.T, cfgPath string) {
	t.Helper()
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case l == "# console:":
			in = true
			out = append(out, "console:")
		case in && strings.HasPrefix(l, "#   "):
			out = append(out, l[2:])
		default:
			in = false
			out = append(out, l)
		}
	}
	uncommented := strings.Join(out, "\n") + "sso:\n  issuer: https://idp.gw.example/\n  client_id: dstm-client\n"
	cfg, err := config.Parse([]byte(uncommented))
	if err != nil {
		t.Fatalf("the console example does not validate: %v\n%s", err, uncommented)
	}
	if cfg.Console == nil || cfg.Console.ClientID != "dstm-console" || len(cfg.Console.Admins) != 1 {
		t.Fatalf("console example not parsed: %+v", cfg.Console)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("state_dir: /var/lib/dstm\npools:\n  - name: corp\n    prefixes: [10.9.0.0/16]\nleases:\n  lifetime: 2h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, "check-config", "-c", good)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	golden(t, "check-config.golden", strings.ReplaceAll(out, good, "CONFIG"))

	risky := filepath.Join(dir, "risky.yaml")
	if err := os.WriteFile(risky, []byte("tsp:\n  anonymous: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = run(t, "check-config", "-c", risky)
	if code != 0 || !strings.Contains(out, "\n# warning: tsp.anonymous: any client") {
		t.Fatalf("risky config: exit %d, output:\n%s", code, out)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("tep:\n  mtu: 100\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = run(t, "check-config", "-c", bad)
	if code != 2 || !strings.Contains(out, "bogus") {
		t.Fatalf("bad config: exit %d, output:\n%s", code, out)
	}
}

func TestAdminCommandsWithoutGateway(t *testing.T) {
	out, code := run(t, "sessions", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 3 || !strings.Contains(out, "is dstm-gateway running?") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func TestVersionAndHelp(t *testing.T) {
	out, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "dstm-gateway ") {
		t.Fatalf("version: %d %q", code, out)
	}
	out, code = run(t, "--help")
	for _, cmd := range []string{"init", "run", "check-config", "token", "revoke", "leases", "sessions", "kick", "status", "passwd", "version"} {
		if !strings.Contains(out, "  "+cmd) {
			t.Errorf("--help does not list %s", cmd)
		}
	}
	if code != 0 {
		t.Fatalf("help exit %d", code)
	}
}

func TestPolicyExplainAndTests(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	policy := `policy:
  default:
    access:
      outbound:
        - {to: [10.1.0.0/16], proto: tcp, ports: [443]}
  groups:
    eng:
      access:
        outbound: [{to: [0.0.0.0/0]}]
        inbound: [{from: [192.0.2.0/24], proto: tcp, ports: [22]}]
  identities:
    bob@corp.example: {groups: [eng]}
`
	if err := os.WriteFile(cfg, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"alice@corp.example", "10.1.2.3", "tcp/443"}, 0, "alice@corp.example may reach 10.1.2.3:443/tcp: allowed by policy.default.access.outbound[0] (to [10.1.0.0/16] tcp 443)"},
		{[]string{"alice@corp.example", "10.9.0.1", "TCP/22"}, 0, "alice@corp.example may not reach 10.9.0.1:22/tcp: no outbound rule of policy.default.access allows it"},
		{[]string{"alice@corp.example", "10.1.2.3", "icmp"}, 0, "may not reach 10.1.2.3/icmp"},
		{[]string{"bob@corp.example", "10.9.0.1", "udp/53"}, 0, `allowed by policy.groups["eng"].access.outbound[0]`},
		{[]string{"--inbound", "bob@corp.example", "192.0.2.9", "tcp/22"}, 0, `bob@corp.example may be reached from 192.0.2.9:22/tcp: allowed by policy.groups["eng"].access.inbound[0]`},
		{[]string{"--json", "bob@corp.example", "192.0.2.9", "tcp/22"}, 0, `"Access": "policy.groups[\"eng\"].access"`},
		{[]string{"alice@corp.example", "10.1.2.3", "tcp"}, 2, "want tcp/PORT"},
		{[]string{"alice@corp.example", "2001:db8::1", "tcp/1"}, 2, "not an IPv4 address"},
		{[]string{"alice@corp.example", "10.1.2.3", "sctp/1"}, 2, "unknown protocol"},
	} {
		out, code := run(t, append([]string{"-c", cfg, "policy", "explain"}, tc.args...)...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("explain %v: exit %d, output:\n%s\nwant %d and %q", tc.args, code, out, tc.code, tc.want)
		}
	}

	// A failing policy test makes the file invalid: check-config, start and reload refuse it.
	failing := policy + "  tests:\n    - identity: alice@corp.example\n      allow: [10.9.0.1:22/tcp]\n"
	if err := os.WriteFile(cfg, []byte(failing), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, "check-config", "-c", cfg)
	if code != 2 || !strings.Contains(out, "policy.tests[0].allow[0]: test failed: alice@corp.example may not reach 10.9.0.1:22/tcp") {
		t.Fatalf("failing policy test: exit %d, output:\n%s", code, out)
	}
}
