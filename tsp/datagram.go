package tsp

import (
	"context"
	"errors"
	"fmt"
)

// ErrStale is returned by DatagramSession.Handle for a datagram whose
// sequence number is older than the last one answered; the datagram is
// dropped without a reply.
var ErrStale = errors.New("tsp: stale datagram")

// DatagramSession drives a Server over UDP for one client (address, port):
// it parses the 8-byte header, echoes it, and answers retransmissions.
//
// Retransmission caching is done here, not by the gateway: a datagram that
// repeats the last answered sequence number (gogoc resends with the same
// sequence and a fresh timestamp) gets the cached reply payload again
// behind its own header, without stepping the machine, even after the
// machine has closed. So the gateway should keep a closed session for a
// short linger time to answer late retransmissions. Not safe for
// concurrent use.
type DatagramSession struct {
	srv      *Server
	lastSeq  uint32
	last     []byte // payload of the last reply
	answered bool
}

// NewDatagramSession wraps srv, whose config must use TransportUDP.
func NewDatagramSession(srv *Server) (*DatagramSession, error) {
	if srv.cfg.Transport != TransportUDP {
		return nil, errors.New("tsp: datagram session needs a UDP server machine")
	}
	return &DatagramSession{srv: srv}, nil
}

// Server returns the wrapped machine (for State, Identity, Established).
func (d *DatagramSession) Server() *Server { return d.srv }

// Handle processes one datagram and returns the datagram to send back
// (nil when nothing must be sent). A malformed header yields
// (nil, error wrapping ErrMalformed): drop it. A stale sequence yields
// (nil, ErrStale). Otherwise the reply is returned together with the
// machine's error, if any, which means the session is closed after this
// reply (see Server.Step).
func (d *DatagramSession) Handle(ctx context.Context, dgram []byte) ([]byte, error) {
	h, payload, err := ParseDatagram(dgram)
	if err != nil {
		return nil, err
	}
	if d.answered {
		switch {
		case h.Seq == d.lastSeq:
			return AppendDatagram(nil, h, d.last), nil
		case seqBefore(h.Seq, d.lastSeq):
			return nil, fmt.Errorf("%w: sequence %#x after %#x", ErrStale, h.Seq, d.lastSeq)
		}
	}
	replies, err := d.srv.Step(ctx, payload)
	if len(replies) == 0 { // closed machine: nothing to answer
		return nil, err
	}
	d.lastSeq, d.last, d.answered = h.Seq, replies[0].Payload, true
	return AppendDatagram(nil, h, d.last), err
}

// Answered reports whether a reply was sent; LastSeq is the sequence it answered.
func (d *DatagramSession) Answered() bool { return d.answered }

// LastSeq returns the sequence number of the last answered datagram.
func (d *DatagramSession) LastSeq() uint32 { return d.lastSeq }

// seqBefore reports whether a precedes b in 28-bit serial arithmetic.
func seqBefore(a, b uint32) bool {
	diff := (b - a) & seqMask
	return diff != 0 && diff < 1<<27
}
