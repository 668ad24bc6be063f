// Package packet holds pure functions over raw IPv4 packets for the data
// plane: header validation and accessors, the Internet checksum and its
// incremental update (RFC 1071, RFC 1624), TCP MSS clamping on SYN segments,
// and builders for the ICMP errors the TEP sends (destination host
// unreachable, fragmentation needed).
//
// Every function works on a caller-supplied []byte and allocates nothing.
// Accessors expect a packet that passed Check; Check, ClampMSS, SYNMSS and
// the ICMP builders validate their input themselves and never panic.
package packet
