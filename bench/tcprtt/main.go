// Command tcprtt measures round-trip time over one TCP connection, directly or through a SOCKS5
// proxy, so that a tunnel reached through a proxy (the rootless client) and one reached by a
// route (a TUN device) are measured the same way. bench/rootless.sh runs it; ICMP ping cannot
// go through a SOCKS5 proxy.
//
//	tcprtt -listen 198.51.100.2:7007                      echo server
//	tcprtt -connect 198.51.100.2:7007 [-socks5 127.0.0.1:1080] [-n 100] [-i 10ms]
//
// The client sends one byte, waits for its echo, n times at interval i, and prints the median
// and 99th percentile in milliseconds and the share of probes lost (no echo within -w), tab
// separated. It exits non-zero when the connection cannot be made or every probe is lost.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"golang.org/x/net/proxy"
)

func main() {
	listen := flag.String("listen", "", "serve an echo on this address")
	connect := flag.String("connect", "", "measure against the echo server at this address")
	socks := flag.String("socks5", "", "reach it through this SOCKS5 proxy")
	n := flag.Int("n", 100, "probes")
	interval := flag.Duration("i", 10*time.Millisecond, "interval between probes")
	wait := flag.Duration("w", 2*time.Second, "how long a probe waits for its echo")
	flag.Parse()
	var err error
	switch {
	case *listen != "" && *connect == "":
		err = serve(*listen)
	case *connect != "" && *listen == "" && *n > 0:
		err = measure(*connect, *socks, *n, *interval, *wait)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcprtt:", err)
		os.Exit(1)
	}
}

func serve(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func measure(addr, socks string, n int, interval, wait time.Duration) error {
	var d proxy.Dialer = &net.Dialer{Timeout: 5 * time.Second}
	if socks != "" {
		var err error
		if d, err = proxy.SOCKS5("tcp", socks, nil, d); err != nil {
			return err
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	var rtts []time.Duration
	b := []byte{0}
	for i := range n {
		if i > 0 {
			time.Sleep(interval)
		}
		b[0] = byte(i)
		t0 := time.Now()
		if err := c.SetDeadline(t0.Add(wait)); err != nil {
			return err
		}
		if _, err := c.Write(b); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// The connection is out of step after a lost echo: stop here, the rest count as lost.
				break
			}
			return err
		}
		if b[0] != byte(i) {
			return fmt.Errorf("probe %d: echo out of order", i)
		}
		rtts = append(rtts, time.Since(t0))
	}
	if len(rtts) == 0 {
		return fmt.Errorf("no echo from %s", addr)
	}
	slices.Sort(rtts)
	ms := func(q float64) float64 {
		return float64(rtts[int(q*float64(len(rtts)-1))].Microseconds()) / 1000
	}
	fmt.Printf("%.3f\t%.3f\t%.0f\n", ms(0.5), ms(0.99), 100*float64(n-len(rtts))/float64(n))
	return nil
}
