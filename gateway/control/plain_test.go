package control

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp"
)

// TestPlainEndpointClaim: one IPv6 endpoint carries one v4v6 tunnel. A new create from it
// replaces an older session of the same identity or a stale one (a legacy client that stopped
// without delete); a live tunnel of another identity keeps it, and the create is refused with
// 301, which the client reads (the answer to its accept it does not).
func TestPlainEndpointClaim(t *testing.T) {
	ep := netip.MustParseAddr("2001:db8::42")
	tests := []struct {
		name      string
		second    string        // identity of the second session
		idle      time.Duration // how long the first tunnel has been silent
		wantCode  int           // 0: the second session is established
		firstEnds bool
	}{
		{"same identity", "alice@corp", 0, 0, true},
		{"other identity, stale", "bob@corp", 2 * time.Hour, 0, true},
		{"other identity, live", "bob@corp", 0, tsp.StatusNoMoreTunnels, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{})
			first, err := h.plainSession(t, "alice@corp", ep)
			if err != nil {
				t.Fatal(err)
			}
			h.srv.now = func() time.Time { return time.Now().Add(tc.idle) }
			second, err := h.plainSession(t, tc.second, ep)
			var se *tsp.StatusError
			switch {
			case tc.wantCode == 0 && err != nil:
				t.Fatalf("second create: %v", err)
			case tc.wantCode != 0 && (!errors.As(err, &se) || se.Code != tc.wantCode):
				t.Fatalf("second create: %v, want status %d", err, tc.wantCode)
			}
			if _, _, closed := first.ss.state(); closed != tc.firstEnds {
				t.Fatalf("first session closed=%v, want %v", closed, tc.firstEnds)
			}
			owner := first
			if tc.wantCode == 0 {
				owner = second
			}
			if got := h.srv.sessions.plainAt(ep); got != owner.ss {
				t.Fatalf("the endpoint belongs to %v, want session %s", got, owner.ss.id)
			}
			_, l, _ := owner.ss.state()
			if ts := h.tep.Session(l.Addr); ts == nil || ts.Info().ID != owner.ss.id {
				t.Fatal("the endpoint's owner has no data plane entry")
			}
		})
	}
}
