package tsp

import (
	"context"
	"errors"
	"fmt"
)

// ErrStale is returned by DatagramSession.Handle for a datagram older than
// the last one answered; it gets no reply.
var ErrStale = errors.New("tsp: stale datagram")

// DatagramSession drives a Server over UDP for one client address and port.
// A datagram repeating the last answered sequence (gogoc resends with a fresh
// timestamp) gets the cached reply again without stepping the machine, even
// after it has closed, so the gateway keeps closed sessions for a short
// linger. Not safe for concurrent use.
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

// Handle processes one datagram and returns the datagram to send back (nil
// for none). A malformed header yields an error wrapping ErrMalformed, a
// stale sequence ErrStale; otherwise the reply comes with the machine's
// error, if any, which closes the session after this reply.
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

// Answered reports whether a reply was sent.
func (d *DatagramSession) Answered() bool { return d.answered }

// LastSeq returns the sequence number of the last answered datagram.
func (d *DatagramSession) LastSeq() uint32 { return d.lastSeq }

// seqBefore reports whether a precedes b in 28-bit serial arithmetic.
func seqBefore(a, b uint32) bool {
	diff := (b - a) & seqMask
	return diff != 0 && diff < 1<<27
}
