package stream

import (
	"bytes"
	"testing"
)

// FuzzParseFrame feeds arbitrary streams to the frame parser and checks
// that every accepted frame is in bounds, looks like IPv4 and re-encodes to
// exactly the bytes it was parsed from.
func FuzzParseFrame(f *testing.F) {
	f.Add(AppendFrame(nil, ipv4Packet(20, 0)), uint16(1400))
	f.Add(append(AppendFrame(nil, nil), AppendFrame(nil, ipv4Packet(60, 9))...), uint16(100))
	f.Add([]byte{0xFF, 0xFF, 0x45}, uint16(65535))
	f.Add([]byte{0, 19, 0x45}, uint16(1400))
	f.Add([]byte{0, 20, 0x60}, uint16(1400))
	f.Fuzz(func(t *testing.T, b []byte, maxPacket uint16) {
		off := 0
		for off < len(b) {
			pkt, n, err := ParseFrame(b[off:], int(maxPacket))
			if err != nil {
				if n != 0 || pkt != nil {
					t.Fatalf("error with output: %d %x", n, pkt)
				}
				return
			}
			if n == 0 {
				return // incomplete
			}
			if n < HeaderLen || off+n > len(b) {
				t.Fatalf("consumed %d of %d", n, len(b)-off)
			}
			if pkt != nil {
				if len(pkt) < MinPacketLen || len(pkt) > int(maxPacket) || pkt[0]>>4 != 4 {
					t.Fatalf("accepted bad packet len %d", len(pkt))
				}
			}
			if re := AppendFrame(nil, pkt); !bytes.Equal(re, b[off:off+n]) {
				t.Fatalf("re-encoded %x, parsed from %x", re, b[off:off+n])
			}
			off += n
		}
	})
}
