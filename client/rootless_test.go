package client

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"golang.zx2c4.com/wireguard/tun/netstack"
)

// TestBatchedTUN: packets the userspace stack sends while nobody reads come out of one Read
// together, in the order sent, and Read reports the device's end after the last packet.
func TestBatchedTUN(t *testing.T) {
	lease := netip.MustParseAddr("192.0.2.2")
	nsdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{lease}, nil, 1400)
	if err != nil {
		t.Fatal(err)
	}
	dev := newBatchedTUN(nsdev, 1400)
	conn, err := tnet.DialUDPAddrPort(netip.AddrPort{}, netip.MustParseAddrPort("198.51.100.2:9"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		if _, err := conn.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Each Write returned once the reader took its packet, so at least n-1 are queued.
	bufs := make([][]byte, dev.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, tunHeadroom+1500)
	}
	sizes := make([]int, len(bufs))
	var got []byte
	for reads := 0; len(got) < n; reads++ {
		k, err := dev.Read(bufs, sizes, tunHeadroom)
		if err != nil {
			t.Fatal(err)
		}
		if reads == 0 && k < n-1 {
			t.Fatalf("first Read returned %d packets, want at least %d", k, n-1)
		}
		for j := range k {
			p := bufs[j][tunHeadroom : tunHeadroom+sizes[j]]
			if len(p) != 20+8+1 || p[0]>>4 != 4 {
				t.Fatalf("packet %x: want an IPv4 UDP datagram with one byte", p)
			}
			got = append(got, p[len(p)-1])
		}
	}
	for i, b := range got {
		if int(b) != i {
			t.Fatalf("payloads in order %v, want 0..%d", got, n-1)
		}
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Read(bufs, sizes, tunHeadroom); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v, want %v", err, os.ErrClosed)
	}
}
