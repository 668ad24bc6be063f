package limit

import "sync"

// Semaphore bounds concurrent holders; TryAcquire never blocks.
type Semaphore struct{ ch chan struct{} }

// NewSemaphore returns a semaphore of n slots.
func NewSemaphore(n int) *Semaphore { return &Semaphore{ch: make(chan struct{}, n)} }

// TryAcquire takes a slot if one is free and returns its release function, which is safe to
// call any number of times; ok is false when every slot is taken.
func (s *Semaphore) TryAcquire() (release func(), ok bool) {
	select {
	case s.ch <- struct{}{}:
	default:
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { <-s.ch }) }, true
}

// InUse returns the slots taken.
func (s *Semaphore) InUse() int { return len(s.ch) }
