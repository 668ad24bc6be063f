package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// IPv4 header constants.
const (
	HeaderLen    = 20 // length of an IPv4 header without options
	MaxHeaderLen = 60 // length of an IPv4 header with the most options

	ProtoICMP = 1  // IP protocol number of ICMP
	ProtoTCP  = 6  // IP protocol number of TCP
	ProtoUDP  = 17 // IP protocol number of UDP

	flagDF      = 0x4000
	offsetMask  = 0x1fff
	defaultTTL  = 64
	versionIHL4 = 0x45
)

// Errors returned by Check. They are sentinel values so that checking a
// packet never allocates.
var (
	ErrShort       = errors.New("packet: shorter than an IPv4 header")
	ErrVersion     = errors.New("packet: IP version is not 4")
	ErrHeaderLen   = errors.New("packet: bad IPv4 header length")
	ErrTotalLen    = errors.New("packet: IPv4 total length exceeds the buffer or is below the header length")
	ErrNotEligible = errors.New("packet: no ICMP error may be sent for this packet")
)

// Check validates the parts of an IPv4 header the data plane relies on:
// version, header length and total length, which may be shorter than pkt
// (use Trim). It does not verify the header checksum.
func Check(pkt []byte) error {
	if len(pkt) < HeaderLen {
		return ErrShort
	}
	if pkt[0]>>4 != 4 {
		return ErrVersion
	}
	hl := int(pkt[0]&0x0f) * 4
	if hl < HeaderLen || hl > len(pkt) {
		return ErrHeaderLen
	}
	tl := int(binary.BigEndian.Uint16(pkt[2:4]))
	if tl < hl || tl > len(pkt) {
		return ErrTotalLen
	}
	return nil
}

// Trim returns pkt cut to its IPv4 total length. pkt must have passed Check.
func Trim(pkt []byte) []byte { return pkt[:TotalLen(pkt)] }

// HeaderLength returns the IPv4 header length in bytes (IHL × 4).
func HeaderLength(pkt []byte) int { return int(pkt[0]&0x0f) * 4 }

// TotalLen returns the IPv4 total length field.
func TotalLen(pkt []byte) int { return int(binary.BigEndian.Uint16(pkt[2:4])) }

// Src returns the IPv4 source address.
func Src(pkt []byte) netip.Addr { return netip.AddrFrom4([4]byte(pkt[12:16])) }

// Dst returns the IPv4 destination address.
func Dst(pkt []byte) netip.Addr { return netip.AddrFrom4([4]byte(pkt[16:20])) }

// Proto returns the IPv4 protocol field.
func Proto(pkt []byte) uint8 { return pkt[9] }

// DF reports whether the Don't Fragment flag is set.
func DF(pkt []byte) bool { return binary.BigEndian.Uint16(pkt[6:8])&flagDF != 0 }

// FragOffset returns the fragment offset in bytes.
func FragOffset(pkt []byte) int {
	return int(binary.BigEndian.Uint16(pkt[6:8])&offsetMask) * 8
}

// HeaderChecksumValid reports whether the IPv4 header checksum is correct.
func HeaderChecksumValid(pkt []byte) bool {
	return Checksum(pkt[:HeaderLength(pkt)], 0) == 0
}

// SetHeaderChecksum computes and stores the IPv4 header checksum.
func SetHeaderChecksum(pkt []byte) {
	hl := HeaderLength(pkt)
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:12], Checksum(pkt[:hl], 0))
}
