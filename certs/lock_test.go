package certs_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dstmgw/dstm/certs"
)

// TestOpenLocked: a CA in use by another process (here: opened twice) is refused at once with
// ErrLocked, not after a long wait with bbolt's bare "timeout".
func TestOpenLocked(t *testing.T) {
	clk := newClock()
	_, dir := newCA(t, clk) // open until the end of the test
	start := time.Now()
	ca, err := certs.Open(dir, testOptions(clk))
	took := time.Since(start)
	if err == nil {
		ca.Close()
		t.Fatal("the CA opened twice")
	}
	if !errors.Is(err, certs.ErrLocked) {
		t.Errorf("err %v, want ErrLocked", err)
	}
	if took >= time.Second {
		t.Errorf("took %v, want less than 1s", took)
	}
}
