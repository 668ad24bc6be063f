package client

import (
	"context"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
)

// addrChanges delivers after the host's addresses changed (netlink), so that a roam is seen
// at once rather than at the next tick; nil if the subscription fails (the ticker remains).
// Bursts are coalesced: one pending signal.
func addrChanges(ctx context.Context, log zerolog.Logger) <-chan struct{} {
	updates := make(chan netlink.AddrUpdate, 16)
	done := make(chan struct{})
	if err := netlink.AddrSubscribe(updates, done); err != nil {
		log.Debug().Err(err).Msg("roaming: no address notifications; checking every 2 s")
		return nil
	}
	out := make(chan struct{}, 1)
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-updates:
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out
}
