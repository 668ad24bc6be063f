package certs

import (
	"sync"
	"sync/atomic"
)

// broker fans revocation events out to subscribers without blocking (see
// Subscribe). Subscribers that must not miss a revocation also consult
// IsRevoked, which is always current.
type broker struct {
	mu      sync.Mutex
	subs    map[uint64]chan Revocation
	next    uint64
	closed  bool
	dropped atomic.Uint64
}

func (b *broker) subscribe(buf int) (<-chan Revocation, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan Revocation, max(buf, 1))
	if b.closed {
		close(ch)
		return ch, func() {}
	}
	if b.subs == nil {
		b.subs = map[uint64]chan Revocation{}
	}
	id := b.next
	b.next++
	b.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if c, ok := b.subs[id]; ok {
				delete(b.subs, id)
				close(c)
			}
		})
	}
}

func (b *broker) publish(r Revocation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs {
		select {
		case ch <- r:
		default:
			b.dropped.Add(1)
		}
	}
}

func (b *broker) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for id, ch := range b.subs {
		delete(b.subs, id)
		close(ch)
	}
}

// Subscribe returns a channel of every future revocation, of capacity buf
// (at least 1), and a function that ends the subscription and closes the
// channel. A full channel loses the event (DroppedEvents), so size buf for
// bursts such as RevokeIdentity.
func (ca *CA) Subscribe(buf int) (<-chan Revocation, func()) { return ca.events.subscribe(buf) }

// DroppedEvents counts revocation events lost to full subscriber channels.
func (ca *CA) DroppedEvents() uint64 { return ca.events.dropped.Load() }
