package split

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Bindings receives a TEP's bindings from Follow, on one goroutine.
type Bindings interface {
	// Sync replaces every binding by all (after a snapshot).
	Sync(all []Binding)
	// Put adds or updates one binding.
	Put(b Binding)
	// Delete removes the binding of lease.
	Delete(lease netip.Addr)
}

// FollowConfig configures Follow.
type FollowConfig struct {
	Client  *clientv3.Client
	Prefix  string // store.etcd.prefix
	TEP     string // this TEP node's name
	Timeout time.Duration
	// Resync, when it delivers, makes Follow read every binding again (a TEP that got its
	// ownership back after losing it).
	Resync <-chan struct{}
	Log    zerolog.Logger
}

// Follow delivers the bindings of cfg.TEP to to until ctx ends: a snapshot (Sync), then the
// changes (Put, Delete); a broken watch is followed by a new snapshot. A value that is not a
// valid binding is logged and treated as no binding.
func Follow(ctx context.Context, cfg FollowConfig, to Bindings) error {
	prefix := newKeys(cfg.Prefix, "").tepBinds(cfg.TEP)
	var failing bool
	for ctx.Err() == nil {
		rev, err := syncBindings(ctx, cfg, prefix, to)
		if err == nil {
			if failing {
				cfg.Log.Info().Msg("TEP bindings follow etcd again")
				failing = false
			}
			err = watchBindings(ctx, cfg, prefix, rev, to)
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errResync) {
			continue
		}
		if !failing {
			cfg.Log.Warn().Err(err).Msg("TEP bindings: etcd watch broken; reading them again")
			failing = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(retryEvery):
		}
	}
	return nil
}

var errResync = errors.New("resync asked")

func syncBindings(ctx context.Context, cfg FollowConfig, prefix string, to Bindings) (int64, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cfg.Client.Get(rctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("read the bindings: %w", err)
	}
	all := make([]Binding, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		b, err := decodeBinding(string(kv.Key), kv.Value)
		if err != nil {
			cfg.Log.Warn().Err(err).Msg("binding ignored")
			continue
		}
		all = append(all, b)
	}
	to.Sync(all)
	return resp.Header.Revision, nil
}

func watchBindings(ctx context.Context, cfg FollowConfig, prefix string, rev int64, to Bindings) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cfg.Client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-cfg.Resync:
			return errResync
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				_, lease, ok := splitKey(key)
				if !ok {
					continue
				}
				if ev.Type == clientv3.EventTypeDelete {
					to.Delete(lease)
					continue
				}
				b, err := decodeBinding(key, ev.Kv.Value)
				if err != nil {
					cfg.Log.Warn().Err(err).Msg("binding ignored")
					to.Delete(lease)
					continue
				}
				to.Put(b)
			}
		}
	}
}
