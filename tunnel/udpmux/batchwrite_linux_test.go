package udpmux

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// gsoFailer sends messages in order until one has a UDP_SEGMENT, which it refuses with err.
type gsoFailer struct {
	err  error
	sent []string
}

func (f *gsoFailer) WriteBatch(ms []ipv6.Message, _ int) (int, error) {
	for i, m := range ms {
		if len(m.OOB) > 0 && f.err != nil {
			return i, os.NewSyscallError("sendmmsg", f.err)
		}
		f.sent = append(f.sent, string(m.Buffers[0]))
	}
	return len(ms), nil
}

// A refused GSO send goes again without GSO, from the first datagram not sent, none twice;
// only EIO turns GSO off for the writer.
func TestBatchWriterGSORefused(t *testing.T) {
	for _, tc := range []struct {
		err    error
		gsoOff bool
	}{{unix.EINVAL, false}, {unix.EIO, true}} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6loopback})
			if err != nil {
				t.Skip(err)
			}
			defer c.Close()
			f := &gsoFailer{err: tc.err}
			w := &BatchWriter{conn: c, bw: f}
			w.gso.Store(true)
			slab := []byte("aaaabbbbcccc")
			bufs := [][]byte{[]byte("solo"), slab[0:4], slab[4:8], slab[8:12], []byte("last")}
			if err := w.WriteBatch(bufs, netip.MustParseAddrPort("[::1]:9")); err != nil {
				t.Fatal(err)
			}
			want := []string{"solo", "aaaa", "bbbb", "cccc", "last"}
			if len(f.sent) != len(want) {
				t.Fatalf("sent %q, want %q", f.sent, want)
			}
			for i := range want {
				if f.sent[i] != want[i] {
					t.Fatalf("sent %q, want %q", f.sent, want)
				}
			}
			if w.gso.Load() == tc.gsoOff {
				t.Fatalf("GSO on: %v after %v", w.gso.Load(), tc.err)
			}
		})
	}
}
