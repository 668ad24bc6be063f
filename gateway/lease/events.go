package lease

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// EventKind says what happened to a lease.
type EventKind uint8

// Event kinds.
const (
	EventGranted      EventKind = iota // an offered lease became active
	EventRenewed                       // an active lease got a fresh lifetime
	EventReleased                      // an active or offered lease was released (Release, ReleaseIdentity)
	EventExpired                       // an active lease's lifetime ran out (now held)
	EventReplaced                      // released to make room under the session limit
	EventOfferExpired                  // an offer was not accepted in time (now free or held)
)

// String returns "granted", "renewed", "released", "expired", "replaced" or "offer-expired".
func (k EventKind) String() string {
	switch k {
	case EventGranted:
		return "granted"
	case EventRenewed:
		return "renewed"
	case EventReleased:
		return "released"
	case EventExpired:
		return "expired"
	case EventReplaced:
		return "replaced"
	case EventOfferExpired:
		return "offer-expired"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one lease change; Lease is the lease after the change (for
// released, expired and replaced events it still names the session that
// lost it).
type Event struct {
	Kind   EventKind
	Lease  Lease
	Reason Reason
}

// DefaultEventBuffer is the subscriber buffer used when Subscribe gets 0.
const DefaultEventBuffer = 256

type subscriber struct {
	ch      chan Event
	dropped atomic.Uint64
}

// hub fans events out without blocking: a subscriber whose buffer is full
// loses the event, which is counted.
type hub struct {
	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	dropped atomic.Uint64
}

func (h *hub) subscribe(buffer int) (<-chan Event, func()) {
	if buffer <= 0 {
		buffer = DefaultEventBuffer
	}
	s := &subscriber{ch: make(chan Event, buffer)}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = make(map[*subscriber]struct{})
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, s)
			close(s.ch)
			h.mu.Unlock()
		})
	}
}

func (h *hub) publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		for _, ev := range evs {
			select {
			case s.ch <- ev:
			default:
				s.dropped.Add(1)
				h.dropped.Add(1)
			}
		}
	}
}

// Subscribe returns a channel of lease events with the given buffer size
// and a function that ends the subscription and closes the channel.
func (m *Manager) Subscribe(buffer int) (<-chan Event, func()) {
	return m.events.subscribe(buffer)
}

// DroppedEvents returns how many events subscribers' full buffers lost.
func (m *Manager) DroppedEvents() uint64 { return m.events.dropped.Load() }
