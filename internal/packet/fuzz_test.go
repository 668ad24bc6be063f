package packet

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzCheck asserts that Check never panics and that every packet it accepts
// has consistent lengths for the accessors.
func FuzzCheck(f *testing.F) {
	f.Add(buildIPv4(addrA, addrB, ProtoUDP, true, make([]byte, 8)))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if Check(pkt) != nil {
			return
		}
		hl, tl := HeaderLength(pkt), TotalLen(pkt)
		if hl < HeaderLen || hl > MaxHeaderLen || hl > tl || tl > len(pkt) || len(Trim(pkt)) != tl {
			t.Fatalf("accepted inconsistent lengths: hl %d tl %d len %d", hl, tl, len(pkt))
		}
		_, _, _, _ = Src(pkt), Dst(pkt), DF(pkt), FragOffset(pkt)
	})
}

// FuzzClampMSS asserts that clamping never grows the MSS, only touches the
// MSS value and the TCP checksum, and keeps a valid checksum valid.
func FuzzClampMSS(f *testing.F) {
	f.Add(buildTCP(addrA, addrB, tcpFlagSYN, mssOpt(1460), nil), uint16(1240))
	f.Fuzz(func(t *testing.T, pkt []byte, max uint16) {
		validBefore := Check(pkt) == nil && Proto(pkt) == ProtoTCP && TotalLen(pkt)-HeaderLength(pkt) >= tcpMinHeader && tcpChecksumValid(pkt)
		var mssBefore uint16
		var hadMSS bool
		if validBefore {
			mssBefore, hadMSS = mssOf(pkt)
		}
		orig := append([]byte(nil), pkt...)
		changed := ClampMSS(pkt, max)
		if !changed {
			if !bytes.Equal(orig, pkt) {
				t.Fatal("packet modified although ClampMSS reported no change")
			}
			return
		}
		after, ok := mssOf(pkt)
		if !ok || after != max || (hadMSS && after > mssBefore) {
			t.Fatalf("MSS after clamp %d (found %v), max %d, before %d", after, ok, max, mssBefore)
		}
		if validBefore && !tcpChecksumValid(pkt) {
			t.Fatal("TCP checksum broken by clamp")
		}
		if diff := countDiff(orig, pkt); diff > 4 {
			t.Fatalf("%d bytes changed, want at most 4", diff)
		}
	})
}

// FuzzICMP asserts that built ICMP errors are well-formed IPv4 with valid
// checksums, bounded in size and addressed to the source of the original.
func FuzzICMP(f *testing.F) {
	f.Add(buildIPv4(addrA, addrB, ProtoUDP, true, make([]byte, 100)), uint16(1280), true)
	f.Fuzz(func(t *testing.T, orig []byte, mtu uint16, fragNeeded bool) {
		from := netip.MustParseAddr("10.99.0.1")
		buf := make([]byte, 3, 3+MaxICMPErrorLen)
		var out []byte
		var err error
		if fragNeeded {
			out, err = AppendFragNeeded(buf, orig, from, mtu)
		} else {
			out, err = AppendHostUnreachable(buf, orig, from)
		}
		if err != nil {
			return
		}
		p := out[3:]
		if Check(p) != nil || !HeaderChecksumValid(p) || Checksum(p[HeaderLen:], 0) != 0 {
			t.Fatal("built ICMP packet is not valid")
		}
		if len(p) > MaxICMPErrorLen || Dst(p) != Src(orig) || &out[0] != &buf[:1][0] {
			t.Fatalf("len %d dst %v, or reallocated", len(p), Dst(p))
		}
		if fragNeeded && binary.BigEndian.Uint16(p[26:28]) != mtu {
			t.Fatal("next-hop MTU not stored")
		}
	})
}

func countDiff(a, b []byte) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}
