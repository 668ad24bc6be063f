package split

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
)

// ErrNoTEP is returned by Pick when no live TEP serves what the session needs.
var ErrNoTEP = errors.New("no TEP node serves this tunnel type")

// retryEvery paces the reconnection of a broken watch.
const retryEvery = 500 * time.Millisecond

// Ownership is this node's etcd ownership lease (etcdstore.Store).
type Ownership interface {
	Ownership() (id int64, validUntil time.Time, ok bool)
}

// TEP is a live TEP node as the control nodes see it.
type TEP struct {
	Name string
	etcdstore.TEPInfo
	// Load is the number of sessions bound to it, by every control node.
	Load int
}

// DirectoryConfig configures a control node's Directory.
type DirectoryConfig struct {
	Client *clientv3.Client
	// Prefix is store.etcd.prefix; Members the member announcements' key prefix.
	Prefix, Members string
	Node            string // this control node's name
	Owner           Ownership
	Timeout         time.Duration // of one etcd request
	// Lost is called, on the Directory's goroutine, with the name of each TEP whose
	// announcement ended; the caller ends the sessions bound to it.
	Lost func(tep string)
	Log  zerolog.Logger
}

// Directory is a control node's view of the TEP nodes and of every binding (their load),
// kept current by a watch; it writes this node's bindings.
type Directory struct {
	cfg  DirectoryConfig
	keys keys

	mu    sync.Mutex
	teps  map[string]etcdstore.TEPInfo
	bound map[string]string // binding key → TEP, of every control node
	load  map[string]int
	ready chan struct{} // closed once the first snapshot is in
}

// NewDirectory returns a Directory; Run fills it.
func NewDirectory(cfg DirectoryConfig) *Directory {
	if cfg.Timeout <= 0 {
		cfg.Timeout = etcdstore.DefaultRequestTimeout
	}
	return &Directory{
		cfg: cfg, keys: newKeys(cfg.Prefix, cfg.Members),
		teps: map[string]etcdstore.TEPInfo{}, bound: map[string]string{}, load: map[string]int{},
		ready: make(chan struct{}),
	}
}

// Ready is closed once the Directory has read the TEPs and bindings a first time.
func (d *Directory) Ready() <-chan struct{} { return d.ready }

// Run keeps the Directory current until ctx ends: a snapshot, then a watch from it; a
// broken watch (etcd out of reach, compaction) is followed by a new snapshot.
func (d *Directory) Run(ctx context.Context) error {
	var failing bool
	for ctx.Err() == nil {
		rev, err := d.snapshot(ctx)
		if err == nil {
			if failing {
				d.cfg.Log.Info().Msg("TEP directory follows etcd again")
				failing = false
			}
			err = d.watch(ctx, rev)
		}
		if ctx.Err() != nil {
			return nil
		}
		if !failing {
			d.cfg.Log.Warn().Err(err).Msg("TEP directory: etcd watch broken; reading it again")
			failing = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(retryEvery):
		}
	}
	return nil
}

// snapshot reads the member announcements and every binding at one revision.
func (d *Directory) snapshot(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	resp, err := d.cfg.Client.Txn(rctx).Then(
		clientv3.OpGet(d.keys.members, clientv3.WithPrefix()),
		clientv3.OpGet(d.keys.binds, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return 0, fmt.Errorf("read the TEPs and bindings: %w", err)
	}
	teps := map[string]etcdstore.TEPInfo{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		if name, info, ok := d.member(kv); ok {
			teps[name] = info
		}
	}
	bound := map[string]string{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		if tep, _, ok := splitKey(string(kv.Key)); ok {
			bound[string(kv.Key)] = tep
		}
	}
	d.mu.Lock()
	var lost []string
	for name := range d.teps {
		if _, ok := teps[name]; !ok {
			lost = append(lost, name)
		}
	}
	d.teps, d.bound = teps, bound
	d.load = map[string]int{}
	for _, tep := range bound {
		d.load[tep]++
	}
	d.mu.Unlock()
	select {
	case <-d.ready:
	default:
		close(d.ready)
		d.cfg.Log.Info().Int("teps", len(teps)).Int("bindings", len(bound)).Msg("TEP directory loaded")
	}
	slices.Sort(lost)
	for _, name := range lost {
		d.lost(name)
	}
	return resp.Header.Revision, nil
}

// member decodes a member announcement; ok is false unless it is a TEP's.
func (d *Directory) member(kv *mvccpb.KeyValue) (string, etcdstore.TEPInfo, bool) {
	var m etcdstore.Member
	if len(kv.Value) > maxValue || json.Unmarshal(kv.Value, &m) != nil || m.TEP == nil {
		return "", etcdstore.TEPInfo{}, false
	}
	if !m.TEP.IPv6.Is6() || !m.TEP.InnerV4.Is4() || m.TEP.MTU <= 0 {
		d.cfg.Log.Warn().Str("key", string(kv.Key)).Msg("TEP announcement without a usable IPv6, inner IPv4 or MTU: ignored")
		return "", etcdstore.TEPInfo{}, false
	}
	return strings.TrimPrefix(string(kv.Key), d.keys.members), *m.TEP, true
}

func (d *Directory) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	members := d.cfg.Client.Watch(wctx, d.keys.members, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	binds := d.cfg.Client.Watch(wctx, d.keys.binds, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case wr, ok = <-members:
		case wr, ok = <-binds:
		}
		if !ok {
			return errors.New("watch closed")
		}
		if err := wr.Err(); err != nil {
			return err
		}
		d.apply(wr.Events)
	}
}

func (d *Directory) apply(evs []*clientv3.Event) {
	var lost []string
	d.mu.Lock()
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		if strings.HasPrefix(key, d.keys.binds) {
			tep, _, ok := splitKey(key)
			_, had := d.bound[key]
			switch {
			case !ok:
			case ev.Type == clientv3.EventTypeDelete && had:
				delete(d.bound, key)
				d.load[tep]--
			case ev.Type == clientv3.EventTypePut && !had:
				d.bound[key] = tep
				d.load[tep]++
			}
			continue
		}
		name := strings.TrimPrefix(key, d.keys.members)
		if ev.Type == clientv3.EventTypePut {
			if _, info, ok := d.member(ev.Kv); ok {
				if _, known := d.teps[name]; !known {
					d.cfg.Log.Info().Str("tep", name).Str("tep_v6", info.IPv6.String()).Msg("TEP joined")
				}
				d.teps[name] = info
				continue
			}
		}
		if _, ok := d.teps[name]; ok {
			delete(d.teps, name)
			lost = append(lost, name)
		}
	}
	d.mu.Unlock()
	for _, name := range lost {
		d.lost(name)
	}
}

func (d *Directory) lost(name string) {
	d.cfg.Log.Warn().Str("tep", name).Msg("TEP left: its sessions move to another TEP")
	if d.cfg.Lost != nil {
		d.cfg.Lost(name)
	}
}

// Need is what a session needs from its TEP.
type Need int

// Needs by data transport.
const (
	NeedDTLS  Need = iota // v4dtlsv6, v4anyv6
	NeedPlain             // v4v6
)

func (n Need) servedBy(t etcdstore.TEPInfo) bool {
	if n == NeedPlain {
		return t.Plain
	}
	return t.DTLSPort != 0
}

// Pick returns the TEP for a session: prefer if it is live and serves need, else the least
// loaded one that does; ties are broken by a hash of key (the session), so that sessions
// arriving together spread.
func (d *Directory) Pick(need Need, prefer, key string) (TEP, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.teps[prefer]; ok && need.servedBy(t) {
		return TEP{Name: prefer, TEPInfo: t, Load: d.load[prefer]}, nil
	}
	var best TEP
	var bestHash uint64
	found := false
	for name, t := range d.teps {
		if !need.servedBy(t) {
			continue
		}
		load, h := d.load[name], tieHash(key, name)
		if !found || load < best.Load || (load == best.Load && h > bestHash) {
			best, bestHash, found = TEP{Name: name, TEPInfo: t, Load: load}, h, true
		}
	}
	if !found {
		return TEP{}, ErrNoTEP
	}
	return best, nil
}

func tieHash(key, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return h.Sum64()
}

// Get returns the live TEP name.
func (d *Directory) Get(name string) (TEP, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.teps[name]
	return TEP{Name: name, TEPInfo: t, Load: d.load[name]}, ok
}

// TEPs returns every live TEP, by name.
func (d *Directory) TEPs() []TEP {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]TEP, 0, len(d.teps))
	for name, t := range d.teps {
		out = append(out, TEP{Name: name, TEPInfo: t, Load: d.load[name]})
	}
	slices.SortFunc(out, func(a, b TEP) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Bind writes b, tied to this node's ownership lease (it goes when the node does); prev, if
// set and on another TEP, is deleted in the same transaction. Without a live ownership it
// fails with etcdstore.ErrNoOwnership.
func (d *Directory) Bind(ctx context.Context, b Binding, prev *Binding) error {
	b.Control = d.cfg.Node
	v, err := encodeBinding(b)
	if err != nil {
		return err
	}
	id, _, ok := d.cfg.Owner.Ownership()
	if !ok {
		return etcdstore.ErrNoOwnership
	}
	ops := []clientv3.Op{clientv3.OpPut(d.keys.bindingKey(b.TEP, b.Lease), string(v), clientv3.WithLease(clientv3.LeaseID(id)))}
	if prev != nil && (prev.TEP != b.TEP || prev.Lease != b.Lease) {
		c, op, err := d.deleteOwn(*prev)
		if err != nil {
			return err
		}
		// The previous binding goes if it is still ours; the new one is written anyway.
		ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
		defer cancel()
		_, err = d.cfg.Client.Txn(ctx).If(c).Then(append(ops, op)...).Else(ops...).Commit()
		if err != nil {
			return fmt.Errorf("bind session %s to TEP %s: %w", b.Session, b.TEP, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	if _, err := d.cfg.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("bind session %s to TEP %s: %w", b.Session, b.TEP, err)
	}
	return nil
}

// Unbind deletes b if it is still what is stored (a later session of the same lease keeps
// its own binding).
func (d *Directory) Unbind(ctx context.Context, b Binding) error {
	b.Control = d.cfg.Node
	c, op, err := d.deleteOwn(b)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	if _, err := d.cfg.Client.Txn(ctx).If(c).Then(op).Commit(); err != nil {
		return fmt.Errorf("unbind session %s from TEP %s: %w", b.Session, b.TEP, err)
	}
	return nil
}

func (d *Directory) deleteOwn(b Binding) (clientv3.Cmp, clientv3.Op, error) {
	b.Control = d.cfg.Node
	v, err := encodeBinding(b)
	if err != nil {
		return clientv3.Cmp{}, clientv3.Op{}, err
	}
	key := d.keys.bindingKey(b.TEP, b.Lease)
	return clientv3.Compare(clientv3.Value(key), "=", string(v)), clientv3.OpDelete(key), nil
}
