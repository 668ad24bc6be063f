package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/dstmgw/dstm/internal/proxy"
	"github.com/dstmgw/dstm/tsp"
)

// Rootless mode (Config.Proxy): the tunnel ends in a userspace TCP/IP stack (gVisor's, as
// wireguard's netstack wraps it) instead of a TUN device, and loopback SOCKS5 and HTTP proxies
// open connections through it. Nothing on the host changes, so no privilege is needed; the
// rest of the client (sessions, transports, renewal, reconnects) is the same.

// startProxies opens the proxy listeners and serves them until ctx ends; stop closes the
// proxied connections and waits for them.
func (c *Client) startProxies(ctx context.Context) (stop func(), err error) {
	c.proxy = proxy.New(0, c.log.With().Str("component", "proxy").Logger())
	var lns []net.Listener
	var kinds []string
	for _, p := range c.cfg.Proxy {
		l, _ := proxy.ParseURL(p) // checked by setDefaults
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return nil, fmt.Errorf("proxy %s: %w", p, err)
		}
		lns, kinds = append(lns, ln), append(kinds, l.Kind)
	}
	var wg sync.WaitGroup
	for i, ln := range lns {
		wg.Go(func() { _ = c.proxy.Serve(ctx, kinds[i], ln) })
		c.log.Info().Str("proxy", kinds[i]).Str("listen", ln.Addr().String()).Msg("proxy listening (rootless mode: no TUN device)")
	}
	return func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
		c.proxy.Close()
	}, nil
}

// netstackInside is inside for rootless mode: a userspace stack with the lease's address and
// the pushed IPv4 DNS servers, made the proxies' network.
func (c *Client) netstackInside(offer *tsp.Tunnel, mtu int, routes []netip.Prefix) (*insideState, error) {
	lease := offer.Client.IPv4
	nsdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{lease}, dnsV4(offer), mtu)
	if err != nil {
		return nil, fmt.Errorf("userspace network stack: %w", err)
	}
	dev := newBatchedTUN(nsdev, mtu)
	ts := newTunSide(dev, mtu, lease.As4())
	in := &insideState{dev: dev, ts: ts, lease: lease, mtu: mtu, routes: routes, runDone: make(chan struct{})}
	go func() {
		defer close(in.runDone)
		_ = ts.run()
	}()
	c.in = in
	c.proxy.SetNetwork(tnet)
	return in, nil
}

// dnsV4 are the offer's IPv4 DNS servers: the tunnel carries IPv4 only.
func dnsV4(offer *tsp.Tunnel) []netip.Addr {
	var out []netip.Addr
	for _, a := range offer.Client.DNSServers {
		if a.Unmap().Is4() {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// batchedTUN gives the netstack device, which hands out one packet per Read and blocks the
// stack's sender until it is taken, reads in batches: a reader goroutine takes each packet
// into one of netstackQueue buffers as soon as the stack sends it, and Read returns every
// packet waiting, so that the link seals and sends them together (one UDP GSO send instead of
// one per packet). When all buffers are full the reader stops taking packets, which holds
// the stack's sender back: nothing is dropped.
type batchedTUN struct {
	tun.Device
	free chan []byte // empty buffers, owned by whoever received them
	full chan []byte // packets read, in order
	done chan struct{}
	err  error // why the reader stopped; written before done is closed
}

// netstackQueue is the number of packets the reader may hold ahead of Read.
const netstackQueue = 256

func newBatchedTUN(dev tun.Device, mtu int) *batchedTUN {
	b := &batchedTUN{
		Device: dev,
		free:   make(chan []byte, netstackQueue),
		full:   make(chan []byte, netstackQueue),
		done:   make(chan struct{}),
	}
	for range netstackQueue {
		b.free <- make([]byte, mtu)
	}
	go b.reader()
	return b
}

func (b *batchedTUN) reader() {
	defer close(b.done)
	sizes := make([]int, 1)
	bufs := make([][]byte, 1)
	for {
		buf := <-b.free
		bufs[0] = buf
		if _, err := b.Device.Read(bufs, sizes, 0); err != nil {
			b.err = err
			return
		}
		b.full <- buf[:sizes[0]]
	}
}

// Read returns the packets waiting, at least one, at most len(bufs).
func (b *batchedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var p []byte
	select {
	case p = <-b.full:
	case <-b.done:
		select { // packets read before the device closed still count
		case p = <-b.full:
		default:
			return 0, b.err
		}
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], p)
		b.free <- p[:cap(p)]
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case p = <-b.full:
		default:
			return n, nil
		}
	}
}

// BatchSize is the most packets one Read returns.
func (b *batchedTUN) BatchSize() int { return 64 }
