package packet

import "encoding/binary"

// Sum adds b to the running 32-bit one's-complement accumulator acc as a
// sequence of big-endian 16-bit words (an odd trailing byte is padded with
// zero, RFC 1071). Fold the result with Fold.
func Sum(b []byte, acc uint64) uint64 {
	for len(b) >= 8 {
		acc += uint64(binary.BigEndian.Uint32(b[:4]))
		acc += uint64(binary.BigEndian.Uint32(b[4:8]))
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b[:2]))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// Fold reduces a one's-complement accumulator to 16 bits and returns its
// complement: the value to store in a checksum field.
func Fold(acc uint64) uint16 {
	for acc>>16 != 0 {
		acc = (acc & 0xffff) + acc>>16
	}
	return ^uint16(acc)
}

// Checksum returns the Internet checksum (RFC 1071) of b with acc as the
// initial accumulator; over a correct checksum field it yields 0.
func Checksum(b []byte, acc uint64) uint16 { return Fold(Sum(b, acc)) }

// UpdateChecksum returns checksum sum updated for one 16-bit word of the
// covered data changing from old to new (RFC 1624, eqn. 3:
// HC' = ~(~HC + ~m + m')).
func UpdateChecksum(sum, old, new uint16) uint16 {
	acc := uint32(^sum) + uint32(^old) + uint32(new)
	for acc>>16 != 0 {
		acc = (acc & 0xffff) + acc>>16
	}
	return ^uint16(acc)
}

// PseudoHeaderSum returns the accumulator of the IPv4 pseudo-header used by
// TCP and UDP checksums: source, destination, protocol and the L4 length.
func PseudoHeaderSum(pkt []byte, l4Len int) uint64 {
	acc := Sum(pkt[12:20], 0)
	return acc + uint64(Proto(pkt)) + uint64(l4Len)
}
