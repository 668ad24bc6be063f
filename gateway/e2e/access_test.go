package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/dstmgw/dstm/internal/netns"
)

const (
	echoPort    = 8080 // the server's TCP echo service (allowed at first, then not)
	clientPort  = 2222 // a TCP service on the client, never allowed inbound
	accessBlock = "policy.default.access"
)

// accessPolicy allows TCP to the server on the given ports and nothing else, in either
// direction, and carries policy tests that hold for it.
func accessPolicy(server netip.Addr, ports ...int) string {
	var ps []string
	for _, p := range ports {
		ps = append(ps, fmt.Sprint(p))
	}
	return fmt.Sprintf(`policy:
  default:
    access:
      outbound:
        - to: [%s/32]
          proto: tcp
          ports: [%s]
  tests:
    - identity: %s
      allow: [%s:80/tcp]
      deny: [%s:%d/udp, %s/icmp]
      deny_inbound: [%s:%d/tcp]
`, server, strings.Join(ps, ", "), identity, server, server, udpPort, server, server, clientPort)
}

// startEcho serves TCP echo on addr:port inside ns.
func startEcho(t *testing.T, ns *netns.NS, addr netip.Addr, port uint16) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, port).String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// echo writes msg on c and waits up to d for it to come back.
func echo(c net.Conn, msg string, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	if err == nil && string(buf) != msg {
		err = fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return err
}

// probe writes one byte on c and reports whether any echo arrives within d (an earlier
// probe's late echo counts: only silence matters).
func probe(c net.Conn, d time.Duration) bool {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte{'p'}); err != nil {
		return false
	}
	n, _ := c.Read(make([]byte, 64))
	return n > 0
}

func (e *env) deniedMetric(direction string) float64 {
	text, err := e.scrape()
	if err != nil {
		e.t.Fatal(err)
	}
	v, _ := metric(text, "dstm_access_denied_packets_total", "rule="+accessBlock, "direction="+direction)
	return v
}

// TestAccessRules: the default's access rules allow TCP 80 and 8080 to the IPv4 server. The
// page on 80 loads (its replies pass), UDP to the server does not leave the gateway, a
// connection from the server to the client is refused, and both are counted; then a SIGHUP
// narrows the rules to port 80 and an established echo connection on 8080 stops within a
// second, on the same session, while the page still loads.
func TestAccessRules(t *testing.T) {
	var server netip.Addr
	e := newEnv(t, gwOptions{prepare: func(e *env) {
		server = e.tp.ServerV4
		appendConfig(t, e.cfgPath, accessPolicy(server, httpPort, echoPort))
	}})
	startEcho(t, e.tp.Server, server, echoPort)
	st := e.up("dtls")
	lease := netip.MustParseAddr(st.Lease)
	session := e.mustSession().ID
	ctx := context.Background()

	if body, err := get(ctx, httpIn(e.tp.Client, 10*time.Second), e.srv.base+"/"); err != nil || string(body) != page {
		t.Fatalf("allowed TCP 80: %q, %v", body, err)
	}

	// UDP to the server: denied on the way out.
	outBefore := e.deniedMetric("outbound")
	var uc net.Conn
	if err := e.tp.Client.Do(func() (err error) {
		uc, err = net.Dial("udp4", netip.AddrPortFrom(server, udpPort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if _, err := uc.Write([]byte("denied")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the UDP datagram counted as denied", func() error {
		if v := e.deniedMetric("outbound"); v <= outBefore {
			return fmt.Errorf("denied outbound %v", v)
		}
		return nil
	})
	select {
	case got := <-e.srv.udp:
		t.Fatalf("the server received the denied datagram %q", got)
	case <-time.After(500 * time.Millisecond):
	}

	// A ping to the server: denied too (no ICMP rule), while the same ping is answered once
	// the rules are gone (see below).
	if err := pingOnce(e.tp.Client, server, time.Second); err == nil {
		t.Fatal("the server answered a ping no rule allows")
	}

	// From the server to a service on the client: refused, however many SYNs it takes.
	startEcho(t, e.tp.Client, lease, clientPort)
	var dialErr error
	_ = e.tp.Server.Do(func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(lease, clientPort).String(), 2*time.Second)
		if err == nil {
			c.Close()
		}
		dialErr = err
		return nil
	})
	if dialErr == nil {
		t.Fatal("the server reached a service on the client")
	}
	if v := e.deniedMetric("inbound"); v < 1 {
		t.Fatalf("denied inbound %v after a refused connection", v)
	}

	// An established connection on 8080, then the rules narrowed under it.
	var conn net.Conn
	if err := e.tp.Client.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(server, echoPort).String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("allowed TCP %d: %v", echoPort, err)
	}
	defer conn.Close()
	if err := echo(conn, "before", 5*time.Second); err != nil {
		t.Fatalf("echo before the reload: %v", err)
	}
	writeConfig(t, e, accessPolicy(server, httpPort))
	outBefore = e.deniedMetric("outbound")
	start := time.Now()
	if err := e.gw.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Probes of one byte every 100 ms: the connection is cut at the first probe that gets no
	// echo while the gateway counts denied packets (a slow echo on a loaded machine does not
	// count: it arrives later and the counter has not moved).
	var stopped time.Duration
	for stopped == 0 {
		sent := time.Since(start)
		if probe(conn, 100*time.Millisecond) {
			if sent > 5*time.Second {
				t.Fatal("the established connection still works 5 s after the reload")
			}
			continue
		}
		if e.deniedMetric("outbound") > outBefore {
			stopped = sent + 100*time.Millisecond
		} else if sent > 5*time.Second {
			t.Fatal("no echo and nothing denied 5 s after the reload")
		}
	}
	t.Logf("established connection cut at most %v after SIGHUP (the first unanswered probe was sent %v after it and waited 100 ms)", stopped, stopped-100*time.Millisecond)
	if stopped > time.Second {
		t.Fatalf("the new rules took up to %v to reach the established session", stopped)
	}
	if got := e.mustSession().ID; got != session {
		t.Fatalf("session %s replaced by %s", session, got)
	}
	if body, err := get(ctx, httpIn(e.tp.Client, 10*time.Second), e.srv.base+"/"); err != nil || string(body) != page {
		t.Fatalf("TCP 80 after the reload: %q, %v", body, err)
	}

	// Without access rules: today's behaviour, the ping is answered.
	writeConfig(t, e, "")
	if err := e.gw.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a ping once the rules are gone", func() error { return pingOnce(e.tp.Client, server, 500*time.Millisecond) })
}

// pingOnce sends one ICMP echo request from ns to dst and waits up to d for its reply.
func pingOnce(ns *netns.NS, dst netip.Addr, d time.Duration) error {
	var c *icmp.PacketConn
	if err := ns.Do(func() (err error) { c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0"); return err }); err != nil {
		return err
	}
	defer c.Close()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 4242, Seq: 1, Data: []byte("dstm-access")}}
	wb, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(wb, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	rb := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(rb)
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(1, rb[:n])
		if err == nil && m.Type == ipv4.ICMPTypeEchoReply && from.String() == dst.String() {
			return nil
		}
	}
}

func appendConfig(t *testing.T, path, more string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(more); err != nil {
		t.Fatal(err)
	}
}

// writeConfig replaces the configuration file with the scenario's plus more.
func writeConfig(t *testing.T, e *env, more string) {
	t.Helper()
	if err := os.WriteFile(e.cfgPath, []byte(e.config()+more), 0o600); err != nil {
		t.Fatal(err)
	}
}
