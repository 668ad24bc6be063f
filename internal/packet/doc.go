// Package packet holds pure functions over raw IPv4 packets for the data
// plane: header validation and accessors, the Internet checksum and its
// incremental update (RFC 1071, RFC 1624), TCP MSS clamping on SYN segments,
// and builders for the ICMP errors the TEP sends (destination host
// unreachable, fragmentation needed).
//
// Every function works on a caller-supplied []byte and allocates nothing, so
// it can run once per packet on the hot path. Functions that read a packet
// expect it to have passed Check first unless their documentation says they
// validate it themselves; none of them panics on short or malformed input.
package packet
