package main

import (
	"encoding/json"
	"encoding/xml"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dstmgw/dstm/client"
)

func TestServiceArgs(t *testing.T) {
	g := &globals{stateDir: "/var/lib/dstm-client", logLevel: "info"}
	for _, tc := range []struct {
		args []string
		want string // joined; "" for an error
	}{
		{[]string{"--gateway", "gw.corp.example"}, "--state-dir /var/lib/dstm-client --log-level info up --gateway gw.corp.example --status-socket " + defaultStatusSocket()},
		{[]string{"--gateway", "gw1,gw2", "--kill-switch", "--status-socket", "/run/x.sock"}, "--state-dir /var/lib/dstm-client --log-level info up --gateway gw1,gw2 --kill-switch --status-socket /run/x.sock"},
		{[]string{"--kill-switch"}, ""},              // no gateway
		{[]string{"--gateway", "gw", "--bogus"}, ""}, // not an up flag
		{[]string{"--gateway", "gw", "extra"}, ""},   // stray argument
	} {
		got, err := serviceArgs(g, tc.args)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%q: accepted: %q", tc.args, got)
		case tc.want != "" && (err != nil || strings.Join(got, " ") != tc.want):
			t.Errorf("%q: %q %v\nwant %q", tc.args, got, err, tc.want)
		}
	}
	if _, err := serviceArgs(&globals{stateDir: "state", logLevel: "info"}, []string{"--gateway", "gw"}); err == nil {
		t.Error("a relative state directory was accepted")
	}
}

// fakeTools records the system tools a service manager runs.
type fakeTools struct{ calls []string }

func (f *fakeTools) run(name string, args ...string) error {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	return nil
}

func TestSystemdInstall(t *testing.T) {
	dir := t.TempDir()
	tools := &fakeTools{}
	s := systemd{dir: dir, run: tools.run}
	args := []string{"--state-dir", "/var/lib/dstm client", "up", "--gateway", "gw.corp.example", "--status-socket", "/run/dstm-client.sock"}
	where, err := s.install("/usr/local/bin/dstm-client", args)
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(where)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`ExecStart=/usr/local/bin/dstm-client --state-dir "/var/lib/dstm client" up --gateway gw.corp.example --status-socket /run/dstm-client.sock` + "\n",
		"Restart=on-failure\n", "WantedBy=multi-user.target\n", "After=network-online.target\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit file lacks %q:\n%s", want, unit)
		}
	}
	if got := strings.Join(tools.calls, "; "); got != "systemctl daemon-reload; systemctl enable --now dstm-client.service" {
		t.Errorf("install ran %q", got)
	}
	tools.calls = nil
	if err := s.uninstall(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tools.calls, "; "); got != "systemctl disable --now dstm-client.service; systemctl daemon-reload" {
		t.Errorf("uninstall ran %q", got)
	}
	if _, err := os.Stat(where); !os.IsNotExist(err) {
		t.Errorf("unit file still there: %v", err)
	}
	if err := s.uninstall(); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("second uninstall: %v", err)
	}
}

func TestSystemdQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        "plain",
		"with space":   `"with space"`,
		`a"b`:          `"a\"b"`,
		`back\slash`:   `"back\\slash"`,
		"100%":         "100%%",
		"$HOME":        "$$HOME",
		"":             `""`,
		"semi;colon":   `"semi;colon"`,
		"/run/x.sock":  "/run/x.sock",
		"gw1,gw2:3653": "gw1,gw2:3653",
	} {
		if got := systemdQuote(in); got != want {
			t.Errorf("systemdQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestLaunchdInstall(t *testing.T) {
	dir := t.TempDir()
	tools := &fakeTools{}
	l := launchd{dir: dir, run: tools.run}
	where, err := l.install("/usr/local/bin/dstm-client", []string{"up", "--gateway", "gw&co.example"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(where)
	if err != nil {
		t.Fatal(err)
	}
	// The plist is XML whose ProgramArguments are the command line, unescaped.
	var doc struct {
		Dict struct {
			Strings []string `xml:"string"`
			Array   struct {
				Strings []string `xml:"string"`
			} `xml:"array"`
		} `xml:"dict"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("plist: %v\n%s", err, b)
	}
	if got := strings.Join(doc.Dict.Array.Strings, " "); got != "/usr/local/bin/dstm-client up --gateway gw&co.example" {
		t.Errorf("ProgramArguments %q", got)
	}
	if doc.Dict.Strings[0] != launchdLabel {
		t.Errorf("label %q", doc.Dict.Strings[0])
	}
	if got := strings.Join(tools.calls, "; "); got != "launchctl bootstrap system "+where {
		t.Errorf("install ran %q", got)
	}
	tools.calls = nil
	if err := l.uninstall(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tools.calls, "; "); got != "launchctl bootout system/"+launchdLabel {
		t.Errorf("uninstall ran %q", got)
	}
}

// TestStatusSocket: another user reads the status of a client run as a service from its
// socket when the state directory has none for it.
func TestStatusSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.sock")
	ss, err := listenStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v %v, want 0666", fi.Mode(), err)
	}
	ss.set(client.Status{State: "up", Gateway: "gw:3653", Lease: "100.64.0.7", Transport: "v4dtlsv6"})
	if _, err := listenStatus(path); err == nil || !strings.Contains(err.Error(), "another dstm-client up") {
		t.Errorf("a second server on a live socket: %v", err)
	}
	out, err := execute(t, "--state-dir", t.TempDir(), "status", "--json", "--status-socket", path)
	if err != nil {
		t.Fatal(err)
	}
	var st client.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Lease != "100.64.0.7" || st.PID != os.Getpid() {
		t.Fatalf("status %+v %v\n%s", st, err, out)
	}
	ss.close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := execute(t, "--state-dir", t.TempDir(), "status", "--status-socket", path); err == nil {
		t.Error("status after the server closed")
	}
	// A socket file left by a dead client is replaced.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ss, err = listenStatus(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ss.close()
}
