package boltstore

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/lease"
)

func claim(a netip.Addr) lease.Txn {
	l := lease.Lease{Addr: a, Pool: "main", Identity: "id-" + a.String(), Session: "s", State: lease.StateOffered,
		Granted: time.Unix(100, 0).UTC(), Expires: time.Unix(130, 0).UTC()}
	return lease.Txn{Leases: []lease.Change{{Addr: a, Lease: &l}}}
}

// TestCloseWhileCommitting closes the store while many commits are queued: each one either
// succeeded, and is in the file when it is reopened, or failed with ErrClosed; none is lost
// or left waiting.
func TestCloseWhileCommitting(t *testing.T) {
	s, path := openTemp(t)
	const n = 400
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Commit(context.Background(), claim(netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)})))
		})
	}
	close(start)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("commits still waiting 10s after Close")
	}
	if err := s.Commit(context.Background(), claim(netip.MustParseAddr("10.9.0.1"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	r, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	snap, err := r.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stored := make(map[netip.Addr]bool, len(snap.Leases))
	for _, rec := range snap.Leases {
		stored[rec.Lease.Addr] = true
	}
	ok := 0
	for i, err := range errs {
		a := netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)})
		switch {
		case err == nil && !stored[a]:
			t.Errorf("commit of %v succeeded but is not in the file", a)
		case err == nil:
			ok++
		case !errors.Is(err, ErrClosed):
			t.Errorf("commit of %v: %v, want nil or ErrClosed", a, err)
		case stored[a]:
			t.Errorf("commit of %v failed but is in the file", a)
		}
	}
	if ok != len(snap.Leases) {
		t.Errorf("%d commits succeeded, %d records stored", ok, len(snap.Leases))
	}
}

// TestGroupCommitConflictsInOneBatch queues claims of the same address from many callers at
// once, so that several land in one bbolt transaction: exactly one wins, every other gets a
// ConflictError carrying the winner's record, and the winner's record is version 1.
func TestGroupCommitConflictsInOneBatch(t *testing.T) {
	s, _ := openTemp(t)
	a := netip.MustParseAddr("10.8.1.1")
	const n = 64
	errs := make(chan error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			errs <- s.Commit(context.Background(), claim(a))
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		var ce *lease.ConflictError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &ce):
			if ce.Current == nil || ce.Current.Version != 1 || ce.Current.Lease.Addr != a {
				t.Errorf("conflict carries %+v, want the winner's record at version 1", ce.Current)
			}
		default:
			t.Errorf("claim: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d claims won, want exactly 1", wins)
	}
}
