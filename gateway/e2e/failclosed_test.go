package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dstmgw/dstm/internal/netns"
)

// countIPv4 counts the IPv4 frames that cross dev in ns (both directions) until the test
// ends, with a packet socket opened in the namespace.
func countIPv4(t *testing.T, ns *netns.NS, dev string) *atomic.Int64 {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, proto); err != nil {
			return err
		}
		// Reads wake up every 100 ms, so the reader sees the end of the test.
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("packet socket on %s: %v", dev, err)
	}
	var n atomic.Int64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		buf := make([]byte, 2048)
		for !stop.Load() {
			if _, _, err := unix.Recvfrom(fd, buf, 0); err == nil {
				n.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		stop.Store(true)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the packet counter did not stop")
		}
	})
	return &n
}

// TestFailClosed: a dual-stack laptop (an IPv4 default route on its physical link too) whose
// gateway dies: while the client reconnects, its IPv4 traffic stays in the tunnel device and
// is dropped; not one IPv4 packet leaves on the physical link. The device and its routes are
// the same before and after, and traffic flows again once the gateway is back.
// dualStack gives the laptop IPv4 on its physical link too, with a default route through the
// gateway's namespace (which forwards IPv4 to the server): a way around the tunnel.
func dualStack(t *testing.T, tp *netns.Topology) {
	t.Helper()
	steps := []func() error{
		func() error { return tp.Client.AddAddr(tp.ClientLink, netip.MustParsePrefix("192.0.2.2/24")) },
		func() error { return tp.Gateway.AddAddr(tp.GatewayClientLink, netip.MustParsePrefix("192.0.2.1/24")) },
		func() error {
			return tp.Client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("192.0.2.1"))
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFailClosed(t *testing.T) {
	e := newEnv(t, gwOptions{})
	tp := e.tp
	dualStack(t, tp)
	st := e.up("dtls")
	e.checkTraffic(64<<10, 64<<10)
	leaked := countIPv4(t, tp.Gateway, tp.GatewayClientLink)

	killed := time.Now()
	e.gw.killHard(t)
	// The laptop keeps sending to the IPv4 server during the outage.
	sent := 0
	consistently(t, 2*time.Second, "no IPv4 on the physical link during the outage", func() error {
		if err := sendUDPFrom(tp.Client, netip.AddrPortFrom(tp.ServerV4, udpPort), "during the outage"); err == nil {
			sent++
		}
		if n := leaked.Load(); n != 0 {
			return fmt.Errorf("%d IPv4 packets left the laptop outside the tunnel", n)
		}
		return nil
	})
	if sent == 0 {
		t.Fatal("the laptop could not send during the outage: the check proves nothing")
	}
	e.startGateway()
	st2 := e.waitClientUp(60*time.Second, killed)
	if st2.Lease != st.Lease || st2.Device != st.Device {
		t.Errorf("after the outage: lease %s on %s, want %s on %s", st2.Lease, st2.Device, st.Lease, st.Device)
	}
	e.checkTraffic(64<<10, 64<<10)
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d IPv4 packets left the laptop outside the tunnel", n)
	}
	t.Logf("%d datagrams sent during the outage, none outside the tunnel", sent)
}

// sendUDPFrom sends one datagram from ns to dst.
func sendUDPFrom(ns *netns.NS, dst netip.AddrPort, msg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := nsDialer(ns)(ctx, "udp4", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

// TestKillSwitch: with --kill-switch, a laptop whose `up` has ended (down) still sends
// nothing outside the tunnel, until `dstm-client kill-switch off`; then its IPv4 takes the
// default route again (which shows the switch was what blocked it).
func TestKillSwitch(t *testing.T) {
	e := newEnv(t, gwOptions{})
	tp := e.tp
	dualStack(t, tp)
	e.up("dtls", "--kill-switch")
	e.checkTraffic(64<<10, 64<<10)
	leaked := countIPv4(t, tp.Gateway, tp.GatewayClientLink)
	if out, err := e.clientCmd("down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if _, timedOut := e.client.waitExit(10 * time.Second); timedOut {
		t.Fatal("dstm-client up did not end")
	}
	tries := 0
	consistently(t, time.Second, "no IPv4 on the physical link after down", func() error {
		tries++ // refused by the blackhole routes ("network unreachable"), or dropped
		_ = sendUDPFrom(tp.Client, netip.AddrPortFrom(tp.ServerV4, udpPort), "after down")
		if n := leaked.Load(); n != 0 {
			return fmt.Errorf("%d IPv4 packets left the laptop", n)
		}
		return nil
	})
	if out, err := e.clientCmd("kill-switch", "off"); err != nil || !strings.Contains(string(out), "routes removed") {
		t.Fatalf("kill-switch off: %v\n%s", err, out)
	}
	eventually(t, 5*time.Second, "IPv4 outside the tunnel once the kill switch is off", func() error {
		_ = sendUDPFrom(tp.Client, netip.AddrPortFrom(tp.ServerV4, udpPort), "switch off")
		if leaked.Load() == 0 {
			return fmt.Errorf("nothing on the physical link")
		}
		return nil
	})
	t.Logf("%d datagrams blocked after down; with the switch off they leave by the default route", tries)
}
