package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/dstmgw/dstm/tunnel"
)

// Bulk transfer sizes.
const (
	bulkUpload   = 20 << 20
	bulkDownload = 8 << 20
)

// checkLease fails the test unless lease is an address of the pool other than the gateway's.
func checkLease(t *testing.T, lease string) {
	t.Helper()
	a, err := netip.ParseAddr(lease)
	if err != nil || !netip.MustParsePrefix(poolPrefix).Contains(a) || a.String() == innerV4 {
		t.Fatalf("lease %q is not a client address of %s", lease, poolPrefix)
	}
}

// TestTransports: for each forced data transport, enroll, up, the page and bulk data both ways,
// and both sides' views of the session.
func TestTransports(t *testing.T) {
	requireE2E(t)
	for _, tc := range []struct {
		transport string
		opts      gwOptions
		want      string
	}{
		{"dtls", gwOptions{}, tunnel.DTLS},
		{"tls", gwOptions{}, tunnel.TLS},
		{"plain", gwOptions{plain: true}, tunnel.Plain},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			st := e.up(tc.transport)
			if st.Transport != tc.want || st.Identity != identity || st.Device != clientTUN {
				t.Fatalf("client status: transport %q identity %q device %q, want %q %q %q",
					st.Transport, st.Identity, st.Device, tc.want, identity, clientTUN)
			}
			checkLease(t, st.Lease)
			s := e.mustSession()
			if s.Transport != tc.want || s.Lease != st.Lease || s.ID == "" {
				t.Fatalf("gateway session %+v: want transport %q lease %q", s, tc.want, st.Lease)
			}
			if !strings.Contains(s.Endpoint, e.tp.ClientV6.String()) {
				t.Errorf("gateway session endpoint %q, want the client's %s", s.Endpoint, e.tp.ClientV6)
			}
			first := s
			// The kernel sends IPv6 router solicitations and MLD reports out of the client's
			// TUN device; such a packet must be dropped, not end the session.
			if err := sendIPv6OnLink(e.tp.Client, clientTUN); err != nil {
				t.Fatalf("sending an IPv6 packet out of %s: %v", clientTUN, err)
			}
			e.checkTraffic(bulkUpload, bulkDownload)
			s = e.mustSession()
			if s.ID != first.ID {
				t.Errorf("the session did not survive the transfer: %s, then %s", first.ID, s.ID)
			}
			if s.PacketsIn == 0 || s.PacketsOut == 0 || s.BytesIn < bulkUpload || s.BytesOut < bulkDownload {
				t.Errorf("gateway session counters after the transfer: %+v", s)
			}
		})
	}
}

// TestSpoofedSourceDropped: a packet whose inner source is not the client's lease, sent into
// the tunnel from the client side, is dropped by the gateway, counted, and never reaches the
// server, while a packet from the lease right after it does.
func TestSpoofedSourceDropped(t *testing.T) {
	e := newEnv(t, gwOptions{})
	e.up("dtls")
	spoofed := netip.MustParseAddr("100.64.0.200") // in the pool, but not this client's lease
	if st, _ := e.clientStatus(); st.Lease == spoofed.String() {
		spoofed = netip.MustParseAddr("100.64.0.201")
	}
	if err := sendRawUDP(e.tp.Client, spoofed, e.tp.ServerV4, udpPort, []byte("spoofed")); err != nil {
		t.Fatalf("sending the spoofed packet: %v", err)
	}
	// Then a datagram from the lease on the same path: once it arrives, the spoofed one (sent
	// first) would have arrived too, had the gateway forwarded it.
	var c net.Conn
	err := e.tp.Client.Do(func() error {
		var err error
		c, err = net.Dial("udp4", netip.AddrPortFrom(e.tp.ServerV4, udpPort).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("legit")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-e.srv.udp:
		if got != "legit" {
			t.Fatalf("the server received %q first: the spoofed packet went through", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the legitimate datagram from the lease did not reach the server")
	}
	select {
	case got := <-e.srv.udp:
		t.Fatalf("the server received another datagram %q", got)
	default:
	}
	eventually(t, 5*time.Second, "dstm_dropped_packets_total{reason=\"spoofed_source\"} > 0", func() error {
		text, err := e.scrape()
		if err != nil {
			return err
		}
		if v, _ := metric(text, "dstm_dropped_packets_total", "reason=spoofed_source"); v < 1 {
			return fmt.Errorf("spoofed_source = %v", v)
		}
		return nil
	})
}

// TestRoaming: the client's IPv6 address changes in the middle of a transfer over DTLS; the
// transfer completes, the session (ID) stays, and the gateway learns the new endpoint.
func TestRoaming(t *testing.T) {
	e := newEnv(t, gwOptions{})
	e.up("dtls")
	before := e.mustSession()

	pr, pw := io.Pipe()
	half := make(chan struct{})
	resume := make(chan struct{})
	go func() {
		src := payload(bulkUpload)
		if _, err := io.CopyN(pw, src, bulkUpload/2); err != nil {
			pw.CloseWithError(err)
			return
		}
		close(half)
		<-resume
		_, err := io.Copy(pw, src)
		pw.CloseWithError(err)
	}()
	type result struct {
		digest string
		err    error
	}
	res := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	go func() {
		d, err := e.srv.upload(ctx, httpIn(e.tp.Client, 90*time.Second), pr)
		res <- result{d, err}
	}()
	defer func() { // unblocks the writer on every way out
		select {
		case <-resume:
		default:
			close(resume)
		}
	}()
	select {
	case <-half:
	case r := <-res:
		t.Fatalf("upload ended before the roam: %+v", r)
	case <-time.After(60 * time.Second):
		t.Fatal("the first half of the upload did not go through")
	}

	newV6 := netip.MustParsePrefix("fd00:d57a::3/64")
	if err := e.tp.Client.AddAddr(e.tp.ClientLink, newV6); err != nil {
		t.Fatal(err)
	}
	nl := e.tp.Client.Netlink()
	link, err := nl.LinkByName(e.tp.ClientLink)
	if err != nil {
		t.Fatal(err)
	}
	old := &netlink.Addr{IPNet: &net.IPNet{IP: e.tp.ClientV6.AsSlice(), Mask: net.CIDRMask(64, 128)}}
	if err := nl.AddrDel(link, old); err != nil {
		t.Fatalf("removing %s: %v", e.tp.ClientV6, err)
	}
	roamed := time.Now()
	close(resume)
	// Time until a new connection through the tunnel works again (the TUN device and its
	// routes stayed up; the DTLS channel follows its connection ID to the new address).
	probeErr := poll(30*time.Second, 20*time.Millisecond, func() error {
		pctx, pcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer pcancel()
		_, err := get(pctx, httpIn(e.tp.Client, 500*time.Millisecond), e.srv.base+"/")
		return err
	})
	if probeErr != nil {
		t.Fatalf("no new connection through the tunnel after the roam: %v", probeErr)
	}
	t.Logf("a new connection through the tunnel works %v after the address change", time.Since(roamed).Round(time.Millisecond))

	want, _ := digest(payload(bulkUpload))
	select {
	case r := <-res:
		if r.err != nil || r.digest != want {
			t.Fatalf("upload across the roam: %q, %v; want %q", r.digest, r.err, want)
		}
		t.Logf("upload finished %v after the address change", time.Since(roamed).Round(time.Millisecond))
	case <-time.After(90 * time.Second):
		t.Fatal("the upload did not finish after the roam")
	}
	eventually(t, 10*time.Second, "the gateway to show the new endpoint in sessions --json", func() error {
		s, err := e.session()
		if err != nil {
			return err
		}
		if !strings.Contains(s.Endpoint, newV6.Addr().String()) {
			return fmt.Errorf("endpoint %s", s.Endpoint)
		}
		return nil
	})
	after := e.mustSession()
	if after.ID != before.ID {
		t.Errorf("session ID changed across the roam: %s → %s", before.ID, after.ID)
	}
	// The control connection was bound to the removed address: the client moved the session
	// to a new one from the new address (the gateway logs the resumption).
	eventually(t, 10*time.Second, "the gateway to log the resumed control connection", func() error {
		b, err := os.ReadFile(filepath.Join(e.dir, "gateway-1.log"))
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte("session resumed on a new control connection")) {
			return errors.New("no resumption logged")
		}
		return nil
	})
	e.checkTraffic(0, 1<<20) // still carrying traffic after the resumption
	if s := e.mustSession(); s.ID != before.ID {
		t.Errorf("session ID changed after the resumption: %s → %s", before.ID, s.ID)
	}
}

// TestTLSFallbackWithoutUDP: against a gateway without UDP (listen.udp: false, so no DTLS),
// `--transport auto` ends up on the TLS stream and carries traffic.
func TestTLSFallbackWithoutUDP(t *testing.T) {
	e := newEnv(t, gwOptions{noUDP: true})
	start := time.Now()
	st := e.up("auto")
	t.Logf("tunnel up over %s %v after start", st.Transport, time.Since(start).Round(time.Millisecond))
	if st.Transport != tunnel.TLS {
		t.Fatalf("client transport %q, want %q", st.Transport, tunnel.TLS)
	}
	if s := e.mustSession(); s.Transport != tunnel.TLS {
		t.Fatalf("gateway session transport %q, want %q", s.Transport, tunnel.TLS)
	}
	e.checkTraffic(2<<20, 2<<20)
}

// TestGatewayRestart: the gateway is killed (SIGKILL) and started again; the client reconnects
// by itself with the same IPv4 lease and traffic flows again.
func TestGatewayRestart(t *testing.T) {
	e := newEnv(t, gwOptions{})
	st1 := e.up("dtls")
	s1 := e.mustSession()
	e.checkTraffic(1<<20, 1<<20)

	killed := time.Now()
	e.gw.killHard(t)
	e.startGateway()
	st2 := e.waitClientUp(60*time.Second, killed)
	t.Logf("client back up %v after the kill (transport %s)", time.Since(killed).Round(time.Millisecond), st2.Transport)
	if st2.Lease != st1.Lease {
		t.Errorf("lease after the restart %s, want the same %s", st2.Lease, st1.Lease)
	}
	s2 := e.mustSession()
	if s2.ID == s1.ID || s2.Lease != st1.Lease {
		t.Errorf("session after the restart %+v (before: %+v)", s2, s1)
	}
	e.checkTraffic(1<<20, 1<<20)
}

// TestRevocation: `dstm-gateway revoke IDENTITY` closes the live session within a second and
// the client can no longer reach the server.
func TestRevocation(t *testing.T) {
	e := newEnv(t, gwOptions{})
	e.up("dtls")
	e.mustSession()
	e.checkTraffic(1<<20, 1<<20)

	if out, err := e.gwCmd("revoke", identity); err != nil {
		t.Fatalf("dstm-gateway revoke: %v\n%s", err, out)
	}
	returned := time.Now()
	err := poll(5*time.Second, 10*time.Millisecond, func() error {
		ss, err := e.sessions()
		if err != nil {
			return err
		}
		for _, s := range ss {
			if s.Identity == identity {
				return fmt.Errorf("session %s still listed", s.ID)
			}
		}
		return nil
	})
	closed := time.Since(returned)
	if err != nil {
		t.Fatalf("the session was not closed within 5 s of the revocation: %v", err)
	}
	t.Logf("revoke → session gone from sessions --json: %v", closed.Round(time.Millisecond))
	if closed > time.Second {
		t.Errorf("the session closed %v after the revocation, want within 1 s", closed)
	}
	c := httpIn(e.tp.Client, time.Second)
	consistently(t, 5*time.Second, "after the revocation", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := get(ctx, c, e.srv.base+"/"); err == nil {
			return fmt.Errorf("the revoked client still reaches the server")
		}
		if s, err := e.session(); err == nil {
			return fmt.Errorf("the revoked client has a session again: %+v", s)
		}
		return nil
	})
}

// TestTeardown: SIGTERM to the client removes its TUN device and routes; SIGTERM to the
// gateway removes its TUN device; both exit cleanly and nothing is left running.
func TestTeardown(t *testing.T) {
	e := newEnv(t, gwOptions{})
	e.up("dtls")
	if _, err := e.tp.Client.Netlink().LinkByName(clientTUN); err != nil {
		t.Fatalf("client TUN %s while up: %v", clientTUN, err)
	}
	if rs, err := e.tp.Client.Netlink().RouteList(nil, netlink.FAMILY_V4); err != nil || len(rs) == 0 {
		t.Fatalf("client IPv4 routes while up: %v, %v", rs, err)
	}

	if err := e.client.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exitErr, timedOut := e.client.waitExit(10 * time.Second)
	if timedOut {
		t.Fatal("dstm-client did not exit within 10 s of SIGTERM")
	}
	if exitErr != nil {
		t.Errorf("dstm-client exit after SIGTERM: %v", exitErr)
	}
	if _, err := e.tp.Client.Netlink().LinkByName(clientTUN); err == nil {
		t.Errorf("client TUN %s still exists after the client exited", clientTUN)
	}
	if rs, err := e.tp.Client.Netlink().RouteList(nil, netlink.FAMILY_V4); err != nil || len(rs) != 0 {
		t.Errorf("client IPv4 routes left after the client exited: %v (%v)", rs, err)
	}
	var ee *exec.ExitError
	if _, err := e.clientCmd("status"); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("dstm-client status after the client exited: %v, want exit status 3 (no tunnel)", err)
	}
	eventually(t, 5*time.Second, "the gateway to drop the session", func() error {
		ss, err := e.sessions()
		if err == nil && len(ss) != 0 {
			err = fmt.Errorf("%d sessions left", len(ss))
		}
		return err
	})

	if _, err := e.tp.Gateway.Netlink().LinkByName(gatewayTUN); err != nil {
		t.Fatalf("gateway TUN %s while running: %v", gatewayTUN, err)
	}
	if err := e.gw.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exitErr, timedOut = e.gw.waitExit(10 * time.Second)
	if timedOut {
		t.Fatal("dstm-gateway did not exit within 10 s of SIGTERM")
	}
	if exitErr != nil {
		t.Errorf("dstm-gateway exit after SIGTERM: %v", exitErr)
	}
	if _, err := e.tp.Gateway.Netlink().LinkByName(gatewayTUN); err == nil {
		t.Errorf("gateway TUN %s still exists after the gateway exited", gatewayTUN)
	}
	for _, ns := range []string{e.tp.Client.Name, e.tp.Gateway.Name} {
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			t.Errorf("ip netns pids %s: %v", ns, err)
		} else if pids := strings.Fields(string(out)); len(pids) != 0 {
			t.Errorf("processes left in %s: %v", ns, pids)
		}
	}
	if _, err := os.Stat(e.dir + "/admin.sock"); err == nil {
		t.Logf("note: the admin socket file is left behind after a clean gateway exit")
	}
}

// TestMetricsDuringSession: /metrics shows the live session and its packets.
func TestMetricsDuringSession(t *testing.T) {
	e := newEnv(t, gwOptions{})
	e.up("dtls")
	e.checkTraffic(1<<20, 1<<20)
	text, err := e.scrape()
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"dstm_sessions", []string{"transport=" + tunnel.DTLS}, 1},
		{"dstm_packets_total", []string{"direction=in", "transport=" + tunnel.DTLS}, 100},
		{"dstm_packets_total", []string{"direction=out", "transport=" + tunnel.DTLS}, 100},
		{"dstm_bytes_total", []string{"direction=in"}, 1 << 20},
		{"dstm_bytes_total", []string{"direction=out"}, 1 << 20},
		{"dstm_handshakes_total", []string{"transport=dtls", "result=ok"}, 1},
	} {
		v, found := metric(text, c.name, c.labels...)
		if !found || v < c.min {
			t.Errorf("%s%v = %v (found %t), want ≥ %v; the samples:\n%s", c.name, c.labels, v, found, c.min, samples(text, c.name))
		}
	}
	if v, _ := metric(text, "dstm_sessions"); v != 1 {
		t.Errorf("dstm_sessions summed over transports = %v, want 1", v)
	}

}

// TestStrayIPv6Counted: IPv6 packets that the client's TUN device emits (the kernel's router
// solicitations and MLD reports) reach the gateway inside the tunnel; it drops them and counts
// them in dstm_dropped_packets_total (as not_ipv4, or malformed), and the session stays.
// TestStrayIPv6Filtered: IPv6 packets the client's kernel sends out of its TUN device (router
// solicitations, MLD) are dropped by the client before the tunnel, on every transport; the
// session survives and traffic flows (on the TLS stream such a packet used to break framing).
func TestStrayIPv6Filtered(t *testing.T) {
	for _, transport := range []string{"dtls", "tls"} {
		t.Run(transport, func(t *testing.T) {
			e := newEnv(t, gwOptions{})
			e.up(transport)
			s1 := e.mustSession()
			dropped := func(text string) float64 {
				a, _ := metric(text, "dstm_dropped_packets_total", "reason=not_ipv4")
				b, _ := metric(text, "dstm_dropped_packets_total", "reason=dtls_not_ipv4")
				return a + b
			}
			text, err := e.scrape()
			if err != nil {
				t.Fatal(err)
			}
			before := dropped(text)
			const stray = 5
			for range stray {
				if err := sendIPv6OnLink(e.tp.Client, clientTUN); err != nil {
					t.Fatalf("sending an IPv6 packet out of %s: %v", clientTUN, err)
				}
			}
			// A packet from the lease after them: once it is through, the IPv6 ones were handled.
			e.checkTraffic(0, 0)
			text, err = e.scrape()
			if err != nil {
				t.Fatal(err)
			}
			if v := dropped(text); v != before {
				t.Errorf("IPv6 packets reached the gateway: not_ipv4 drops went from %v to %v", before, v)
			}
			if s2 := e.mustSession(); s2.ID != s1.ID {
				t.Errorf("the session changed: %s → %s", s1.ID, s2.ID)
			}
		})
	}
}

// samples returns the lines of text that are samples of the metric called name.
func samples(text, name string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
