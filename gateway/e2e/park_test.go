package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestParkedControl: `up --park-control` closes the control connection once the DTLS link
// carries the session; the gateway keeps the session detached (no TCP connection left on its
// port), traffic flows, each lease renewal resumes the session on a new connection and parks
// it again (same address over several lifetimes), and `down` ends the session on the gateway.
func TestParkedControl(t *testing.T) {
	const lifetime = 10 * time.Second // the shortest leases.lifetime: a renewal every ~7 s
	e := newEnv(t, gwOptions{leaseLifetime: lifetime})
	st := e.up("dtls", "--park-control")
	lease := st.Lease
	port := netip.MustParseAddrPort(e.gwAddr).Port()
	controlConns := func() (int, error) {
		out, err := exec.Command("ip", "netns", "exec", e.tp.Gateway.Name,
			"ss", "-Htn", "state", "established", fmt.Sprintf("( sport = :%d )", port)).Output()
		if err != nil {
			return 0, fmt.Errorf("ss: %w", err)
		}
		return len(strings.Fields(string(out))) / 4, nil // 4 columns a connection with -H in a state filter
	}
	parked := func() error {
		n, err := controlConns()
		if err == nil && n != 0 {
			err = fmt.Errorf("%d control connections open", n)
		}
		return err
	}
	eventually(t, 10*time.Second, "the control connection parked", parked)
	e.checkTraffic(1<<20, 1<<20)

	renewals := func() int {
		b, _ := os.ReadFile(e.client.logPath)
		return strings.Count(string(b), `"reason":"lease renewal"`)
	}
	eventually(t, 3*lifetime, "two lease renewals by resuming the session", func() error {
		if n := renewals(); n < 2 {
			return fmt.Errorf("%d renewals", n)
		}
		return nil
	})
	eventually(t, 10*time.Second, "the control connection parked again", parked)
	// The gateway takes each park for what it is, not for a lost connection (logged at info).
	if b, _ := os.ReadFile(e.gw.logPath); strings.Count(string(b), "control connection closed by the client") < 3 ||
		strings.Contains(string(b), "control connection lost") {
		t.Error("the gateway did not log the parks as closed by the client (debug) but as lost connections")
	}
	s := e.mustSession()
	if s.Lease != lease || s.Transport != "v4dtlsv6" {
		t.Fatalf("after the renewals the gateway has %+v, want lease %s over v4dtlsv6", s, lease)
	}
	if st, err := e.clientStatus(); err != nil || st.Lease != lease {
		t.Fatalf("client status after the renewals: %+v, %v; want lease %s", st, err, lease)
	}
	e.checkTraffic(1<<20, 1<<20)

	if out, err := e.clientCmd("down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	eventually(t, 5*time.Second, "the gateway to end the session (close record)", func() error {
		ss, err := e.sessions()
		if err == nil && len(ss) != 0 {
			err = fmt.Errorf("%d sessions left", len(ss))
		}
		return err
	})
}
