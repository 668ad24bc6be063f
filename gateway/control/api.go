package control

import (
	"errors"

	"github.com/dstmgw/dstm/gateway/lease"
)

// ErrNoSession is returned by Kick for an unknown session id.
var ErrNoSession = errors.New("no such session")

// Sessions returns a view of every live session.
func (s *Server) Sessions() []View {
	all := s.sessions.all()
	out := make([]View, 0, len(all))
	for _, ss := range all {
		out = append(out, ss.view())
	}
	return out
}

// Count returns the number of live sessions.
func (s *Server) Count() int { return s.sessions.len() }

// Serves reports whether session id is live (the route announcer announces only the leases
// of live sessions).
func (s *Server) Serves(id string) bool { return s.sessions.get(id) != nil }

// SessionCounts counts live sessions by data transport ("none" before the first); it
// implements metrics.SessionStats.
func (s *Server) SessionCounts() map[string]int {
	out := map[string]int{}
	for _, v := range s.Sessions() {
		t := v.Transport
		if t == "" {
			t = "none"
		}
		out[t]++
	}
	return out
}

// Kick ends a session at the operator's request.
func (s *Server) Kick(id string) error {
	ss := s.sessions.get(id)
	if ss == nil {
		return ErrNoSession
	}
	ss.log.Warn().Str("reason", "kicked by the operator").Msg("session closed")
	s.end(ss, lease.ReasonKicked)
	return nil
}
