package control

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

// TestOfferedSessionDoesNotOutliveItsControl: a DTLS link bound while the lease is only
// offered, then the control connection ends without an accept. The session must end with it
// (the lease was never the client's), and with it the TEP entry and the offer; otherwise the
// TEP forwards for an address the lease manager will hand to someone else.
func TestOfferedSessionDoesNotOutliveItsControl(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b, link := h.dtlsSession(t, "alice@corp", false)
	_, l, _ := b.ss.state()
	if h.tep.Session(l.Addr) == nil {
		t.Fatal("no TEP entry after the bind")
	}
	h.srv.controlEnded(b, false)
	if _, _, closed := b.ss.state(); !closed {
		t.Fatal("the session carries on without its control connection and with an offer only")
	}
	if h.tep.Session(l.Addr) != nil {
		t.Fatal("the TEP still forwards for the offered address")
	}
	if got, ok := h.leases.Get(l.Addr); ok && got.State == lease.StateOffered {
		t.Fatalf("the offer is still held: %+v", got)
	}
	select {
	case <-link.Done():
	default:
		t.Fatal("the DTLS link was not closed")
	}
}

// TestAcceptedDTLSSessionCarriesOn: with the lease accepted, losing the control connection
// keeps the session while its DTLS link is alive (docs/decisions/0003).
func TestAcceptedDTLSSessionCarriesOn(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b, link := h.dtlsSession(t, "alice@corp", true)
	h.srv.controlEnded(b, false)
	if _, _, closed := b.ss.state(); closed {
		t.Fatal("an accepted DTLS session ended with its control connection")
	}
	link.Close()
	h.srv.unlinkWhenDone(b.ss, link)
	if _, _, closed := b.ss.state(); !closed {
		t.Fatal("a detached session outlived its DTLS link")
	}
}

// TestOfferExpiryEndsSession: an offer that is not accepted in time ends its session (the
// lease manager's offer-expired event), TEP entry included.
func TestOfferExpiryEndsSession(t *testing.T) {
	h := newHarness(t, harnessOptions{server: func(s *Server) { s.reconcileEvery = time.Hour }}) // the event alone
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.follow(ctx)
	b, _ := h.dtlsSession(t, "alice@corp", false)
	_, l, _ := b.ss.state()
	h.clk.Advance(time.Minute)
	if n, err := h.leases.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire: %d %v", n, err)
	}
	// end marks the session closed before it detaches the data plane: wait for both.
	waitFor(t, "the session to end and its TEP entry to go", func() bool {
		_, _, closed := b.ss.state()
		return closed && h.tep.Session(l.Addr) == nil
	})
}

// TestReconcileAfterDroppedEvents: lease events that end sessions are dropped when the
// follower's buffer is full. Reconciliation must still end every session whose lease expired
// and leave no TEP entry behind: a TEP session exists only while its lease is held for it.
func TestReconcileAfterDroppedEvents(t *testing.T) {
	h := newHarness(t, harnessOptions{server: func(s *Server) { s.eventBuffer = 1 }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 20
	for i := range n {
		h.dtlsSession(t, fmt.Sprintf("user%d@corp", i), true)
	}
	h.follow(ctx)
	h.clk.Advance(2 * time.Hour)
	if got, err := h.leases.Expire(ctx); err != nil || got != n {
		t.Fatalf("Expire: %d %v", got, err)
	}
	waitFor(t, "every session to end", func() bool { return h.srv.Count() == 0 })
	if d := h.leases.DroppedEvents(); d == 0 {
		t.Fatal("no event was dropped: the test did not test reconciliation")
	}
	if got := len(h.tep.Sessions()); got != 0 {
		t.Fatalf("%d TEP entries left", got)
	}
	drops := map[string]uint64{}
	h.srv.Drops(drops)
	if drops["sessions_reconciled"] == 0 || drops["lease_events_dropped"] == 0 {
		t.Fatalf("drops %v", drops)
	}
}

// TestReconcileRemovesOrphanTEPEntries: a TEP entry whose session is gone is removed.
func TestReconcileRemovesOrphanTEPEntries(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	b, _ := h.dtlsSession(t, "alice@corp", true)
	_, l, _ := b.ss.state()
	h.srv.sessions.remove(b.ss) // as if the table lost it without ending it
	if ended, orphans := h.srv.reconcile(); ended != 0 || orphans != 1 {
		t.Fatalf("reconcile: ended %d, orphans %d; want 0, 1", ended, orphans)
	}
	if h.tep.Session(l.Addr) != nil {
		t.Fatal("orphan TEP entry left")
	}
}

// TestReplacedSessionYieldsItsTEPEntry: a reconnecting client's new session replaces its old
// one (one session per identity) and gets the same, sticky address. Its data channel must bind
// even before the old session's end arrives as a lease event.
func TestReplacedSessionYieldsItsTEPEntry(t *testing.T) {
	h := newHarness(t, harnessOptions{maxSessions: 1})
	old, _ := h.dtlsSession(t, "alice@corp", true) // no follower: the event is not handled
	_, lo, _ := old.ss.state()
	cur, _ := h.dtlsSession(t, "alice@corp", true)
	_, lc, _ := cur.ss.state()
	if lo.Addr != lc.Addr {
		t.Fatalf("not the sticky address: %v then %v", lo.Addr, lc.Addr)
	}
	if _, _, closed := old.ss.state(); !closed {
		t.Fatal("the replaced session is still live")
	}
	if ts := h.tep.Session(lc.Addr); ts == nil || ts.Info().ID != cur.ss.id {
		t.Fatal("the TEP entry is not the new session's")
	}
}
