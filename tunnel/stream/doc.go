// Package stream is the v4tlsv6 transport: inner IPv4 packets carried on
// the TSP-SSL TLS connection after the tunnel was accepted.
//
// Each packet travels as one frame: a 2-byte big-endian length followed by
// the packet. A zero length is a keepalive frame and carries nothing. The
// receiver closes the stream with an error on a frame that cannot be an
// IPv4 packet (shorter than 20 bytes, version nibble not 4) or that is
// longer than the configured MTU plus a small slack: a reliable stream that
// carries garbage has lost its framing, and there is no way to resynchronise.
//
// Writes never block the caller on the network: WritePackets appends frames
// to a bounded per-link buffer and a writer goroutine flushes whatever has
// accumulated with one conn.Write. When the buffer is full, the newest
// packets are dropped and counted, like a router's tail drop.
package stream
