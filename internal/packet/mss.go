package packet

import "encoding/binary"

const (
	tcpMinHeader = 20
	tcpFlagSYN   = 0x02
	tcpOptEOL    = 0
	tcpOptNOP    = 1
	tcpOptMSS    = 2
	tcpOptMSSLen = 4
)

// MSSForMTU returns the largest TCP MSS that fits an IPv4 path MTU without
// options in either header (MTU − 40).
func MSSForMTU(mtu int) uint16 {
	mss := mtu - HeaderLen - tcpMinHeader
	switch {
	case mss < 0:
		return 0
	case mss > 0xffff:
		return 0xffff
	}
	return uint16(mss)
}

// ClampMSS lowers the MSS option of a TCP SYN in the IPv4 packet pkt to max,
// fixing the TCP checksum incrementally, and reports whether pkt changed.
// Any other packet, or a malformed one, is left untouched.
func ClampMSS(pkt []byte, max uint16) bool {
	tcp, at := synMSSOffset(pkt)
	if at < 0 {
		return false
	}
	old := binary.BigEndian.Uint16(tcp[at : at+2])
	if old <= max {
		return false
	}
	binary.BigEndian.PutUint16(tcp[at:at+2], max)
	sum := binary.BigEndian.Uint16(tcp[16:18])
	if at%2 == 0 {
		sum = UpdateChecksum(sum, old, max)
	} else {
		// A value at an odd offset straddles two checksum words: its
		// contribution to the one's-complement sum is byte-swapped.
		sum = UpdateChecksum(sum, swap16(old), swap16(max))
	}
	binary.BigEndian.PutUint16(tcp[16:18], sum)
	return true
}

// SYNMSS returns the MSS option of the TCP SYN in pkt, if there is one.
func SYNMSS(pkt []byte) (uint16, bool) {
	tcp, at := synMSSOffset(pkt)
	if at < 0 {
		return 0, false
	}
	return binary.BigEndian.Uint16(tcp[at : at+2]), true
}

// synMSSOffset returns the TCP segment of pkt and the offset of its MSS
// value, or -1 when pkt is not a first-fragment TCP SYN with an MSS option.
func synMSSOffset(pkt []byte) ([]byte, int) {
	if Check(pkt) != nil || Proto(pkt) != ProtoTCP || FragOffset(pkt) != 0 {
		return nil, -1
	}
	tcp := pkt[HeaderLength(pkt):TotalLen(pkt)]
	if len(tcp) < tcpMinHeader || tcp[13]&tcpFlagSYN == 0 {
		return nil, -1
	}
	dataOff := int(tcp[12]>>4) * 4
	if dataOff < tcpMinHeader || dataOff > len(tcp) {
		return nil, -1
	}
	return tcp, findMSS(tcp[:dataOff])
}

// findMSS returns the offset within the TCP header hdr of the MSS option's
// value, or -1 if there is none or the option list is malformed.
func findMSS(hdr []byte) int {
	for i := tcpMinHeader; i < len(hdr); {
		switch hdr[i] {
		case tcpOptEOL:
			return -1
		case tcpOptNOP:
			i++
			continue
		}
		if i+1 >= len(hdr) {
			return -1
		}
		l := int(hdr[i+1])
		if l < 2 || i+l > len(hdr) {
			return -1
		}
		if hdr[i] == tcpOptMSS {
			if l != tcpOptMSSLen {
				return -1
			}
			return i + 2
		}
		i += l
	}
	return -1
}

func swap16(v uint16) uint16 { return v<<8 | v>>8 }
