package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the unprivileged user the rootless client runs as.
const nobody = 65534

// TestRootlessProxy: `dstm-client up --proxy` as an unprivileged user (uid 65534, no
// capabilities) in the client namespace: no TUN device, no route, and yet curl reaches the
// IPv4-only server through the tunnel by SOCKS5 (the name resolved by the pushed DNS server,
// through the tunnel) and by the HTTP proxy (CONNECT, and plain requests).
func TestRootlessProxy(t *testing.T) {
	e := newEnv(t, gwOptions{dns: true})
	startDNS(t, e.tp.Server, e.tp.ServerV4, e.tp.ServerV4) // the name leads to the web server
	e.enroll()
	// The unprivileged user needs its state directory and the binary.
	if err := filepath.Walk(e.cdir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, nobody, nobody)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{e.dir, filepath.Dir(bins.client)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.client = startProc(t, "client", e.tp.Client, filepath.Join(e.dir, "client.log"),
		"setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups", "--inh-caps=-all",
		bins.client, "--state-dir", e.cdir, "--log-level", "debug", "up", "--gateway", e.gwAddr,
		"--proxy", "socks5://127.0.0.1:1080,http://127.0.0.1:8080")
	st := e.waitClientUp(30*time.Second, time.Time{})
	if st.Device != "" || len(st.Routes) != 0 || len(st.Proxy) != 2 {
		t.Errorf("status: device %q routes %v proxy %v, want no device, no routes, two proxies", st.Device, st.Routes, st.Proxy)
	}
	uid, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.client.cmd.Process.Pid))
	if err != nil || !strings.Contains(string(uid), fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", nobody, nobody, nobody, nobody)) {
		t.Fatalf("the client does not run as uid %d: %v\n%s", nobody, err, uid)
	}
	if out, err := output(e.tp.Client.Command(context.Background(), "ip", "-o", "link", "show", "type", "tun")); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("TUN devices in the client namespace: %q %v", out, err)
	}

	url := fmt.Sprintf("http://%s.%s:%d/", dnsHost, dnsDomain, httpPort)
	curl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := output(e.tp.Client.Command(ctx, "curl", append([]string{"-sS", "--fail", "--max-time", "20"}, args...)...))
		return string(out), err
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"SOCKS5, the name resolved through the tunnel", []string{"--socks5-hostname", "127.0.0.1:1080", url}},
		{"SOCKS5, an IPv4 address", []string{"--socks5", "127.0.0.1:1080", e.srv.base + "/"}},
		{"HTTP CONNECT", []string{"--proxytunnel", "--proxy", "http://127.0.0.1:8080", url}},
		{"HTTP, a plain request", []string{"--proxy", "http://127.0.0.1:8080", url}},
	} {
		out, err := curl(tc.args...)
		if err != nil || out != page {
			t.Errorf("%s: %q, %v", tc.name, out, err)
		}
	}
	// 16 MB through SOCKS5, checked by hash.
	const n = 16 << 20
	file := filepath.Join(e.dir, "download")
	start := time.Now()
	if _, err := curl("--socks5-hostname", "127.0.0.1:1080", "-o", file, fmt.Sprintf("%sbytes?n=%d", url, n)); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	want, _ := digest(payload(n))
	if have := fmt.Sprintf("%s %d", hex.EncodeToString(h[:]), len(b)); have != want {
		t.Fatalf("download through SOCKS5: %s, want %s", have, want)
	}
	t.Logf("16 MB through the rootless client's SOCKS5 proxy in %v (%.0f Mbit/s)", d.Round(time.Millisecond), float64(n*8)/d.Seconds()/1e6)
	// A name the tunnel's DNS does not know: curl says the proxy could not resolve it.
	if _, err := curl("--socks5-hostname", "127.0.0.1:1080", fmt.Sprintf("http://nowhere.e2e.test:%d/", httpPort)); err == nil {
		t.Error("an unknown name was fetched through the proxy")
	}

	// Figures, beside the TUN client in the same namespace and run: a 64 MB download and the
	// time to the first byte of the small page (a TCP handshake and a request through the
	// tunnel, plus the SOCKS5 exchange with the local proxy), by address so that no DNS is
	// timed.
	rootless := measureCurl(t, curl, e.srv.base, "--socks5", "127.0.0.1:1080")
	if err := e.client.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err, timedOut := e.client.waitExit(10 * time.Second); timedOut || err != nil {
		t.Fatalf("the rootless client did not stop on SIGTERM: %v (timed out %v)", err, timedOut)
	}
	e.up("dtls")
	withTUN := measureCurl(t, curl, e.srv.base)
	t.Logf("64 MB download: rootless (SOCKS5, netstack) %.0f Mbit/s, TUN %.0f Mbit/s; time to first byte, median of 11: rootless %v, TUN %v",
		rootless.mbits, withTUN.mbits, rootless.firstByte, withTUN.firstByte)
}

// curlFigures are what measureCurl measured.
type curlFigures struct {
	mbits     float64       // a 64 MB download
	firstByte time.Duration // median of 11 fetches of the small page
}

// measureCurl times a 64 MB download from base and 11 fetches of its page with curl in the client
// namespace, proxy being curl's proxy arguments (none: the TUN device's routes).
func measureCurl(t *testing.T, curl func(...string) (string, error), base string, proxy ...string) curlFigures {
	t.Helper()
	var f curlFigures
	out, err := curl(append(proxy, "-o", "/dev/null", "-w", "%{speed_download}", fmt.Sprintf("%s/bytes?n=%d", base, 64<<20))...)
	if err != nil {
		t.Fatal(err)
	}
	var bps float64
	if _, err := fmt.Sscan(out, &bps); err != nil {
		t.Fatalf("curl speed %q: %v", out, err)
	}
	f.mbits = bps * 8 / 1e6
	var cs []time.Duration
	for range 11 {
		out, err := curl(append(proxy, "-o", "/dev/null", "-w", "%{time_starttransfer}", base+"/")...)
		if err != nil {
			t.Fatal(err)
		}
		var sec float64
		if _, err := fmt.Sscan(out, &sec); err != nil {
			t.Fatalf("curl time_starttransfer %q: %v", out, err)
		}
		cs = append(cs, time.Duration(sec*float64(time.Second)))
	}
	slices.Sort(cs)
	f.firstByte = cs[len(cs)/2].Round(10 * time.Microsecond)
	return f
}
