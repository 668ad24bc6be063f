package control

import (
	"sync"
)

// semaphore bounds concurrent handshakes; TryAcquire never blocks.
type semaphore struct{ ch chan struct{} }

func newSemaphore(n int) *semaphore { return &semaphore{ch: make(chan struct{}, n)} }

// TryAcquire takes a slot if one is free.
func (s *semaphore) TryAcquire() bool {
	select {
	case s.ch <- struct{}{}:
		return true
	default:
		return false
	}
}

// Once returns a release function for an acquired slot that is safe to call many times.
func (s *semaphore) Once() func() {
	var once sync.Once
	return func() { once.Do(func() { <-s.ch }) }
}
