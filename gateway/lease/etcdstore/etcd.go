// Package etcdstore is the lease.Store several gateways share (cluster
// mode), on etcd.
//
// Layout under the prefix (default "/dstm/"):
//
//	lease/a/<IPv4>      the record of a non-free address (JSON); the key's
//	                    etcd ModRevision is the lease.Record version (unique
//	                    over the store's history: a key deleted and created
//	                    again never shows an old version)
//	lease/i/<identity>  the identity index entry (JSON list of addresses)
//
// Ownership: the store holds one etcd lease, kept alive while the process
// runs (Options.TTL). Offered and active records are written with it
// attached, so when the gateway dies etcd deletes them after the TTL; the
// other gateways' watches see the deletes (Update.Orphaned) and write the
// active ones back as held for their identities.
package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dstmgw/dstm/gateway/lease"
)

// Defaults of Options.
const (
	DefaultPrefix         = "/dstm/"
	DefaultTTL            = 5 * time.Second
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 3 * time.Second
	// DefaultMaxTxnOps is etcd's default --max-txn-ops.
	DefaultMaxTxnOps = 128
)

// loadPage bounds the keys read by one range request of Load.
const loadPage = 2000

// ErrNameInUse is returned by Open when another live gateway has this one's name: both would
// take each other's sessions for their own.
var ErrNameInUse = errors.New("etcdstore: another gateway of the cluster has this name")

// ErrNoOwnership is wrapped by Commit when this gateway holds no live
// ownership lease: it may not write offered or active records.
var ErrNoOwnership = fmt.Errorf("%w: this gateway's etcd ownership lease is not live", lease.ErrStoreUnavailable)

// Options configures a Store.
type Options struct {
	Endpoints []string
	TLS       *tls.Config // nil: plain gRPC
	Username  string
	Password  string
	// Prefix is prepended to every key; gateways of one cluster share it.
	Prefix string
	// Owner is this gateway's name, lease.Lease.Owner of its sessions.
	Owner string
	// TTL of the ownership lease: how long a dead gateway's sessions keep
	// their addresses (whole seconds, at least 2).
	TTL            time.Duration
	DialTimeout    time.Duration
	RequestTimeout time.Duration
	// MaxTxnOps is the cluster's --max-txn-ops.
	MaxTxnOps int
	// Member is what this gateway announces under members/<Owner> while its ownership
	// lease lives (Members lists them).
	Member Member
	Log    zerolog.Logger
	Now    func() time.Time
}

// Member is a gateway's announcement in the cluster.
type Member struct {
	Name    string    `json:"name"`
	Version string    `json:"version,omitempty"`
	Listen  []string  `json:"listen,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// Pools is a fingerprint of the gateway's pools: the gateways of a cluster should have
	// the same (a client's sticky address is in a pool every gateway has).
	Pools string `json:"pools,omitempty"`
	// Roles are the node's roles ("control", "tep"); empty: both, in one process.
	Roles []string `json:"roles,omitempty"`
	// TEP is what a TEP node serves, for the control nodes that pick one per session
	// (docs/decisions/0010-split-roles.md); nil unless the node runs only the TEP role.
	TEP *TEPInfo `json:"tep,omitempty"`
}

// TEPInfo is a TEP node's data plane as offers name it.
type TEPInfo struct {
	IPv6    netip.Addr `json:"ipv6"`     // the outer address clients tunnel to
	InnerV4 netip.Addr `json:"inner_v4"` // its inner address (keepalive target)
	MTU     int        `json:"mtu"`      // its TUN device's MTU
	// DTLSPort is the UDP port of its DTLS data channel; 0: no DTLS.
	DTLSPort uint16 `json:"dtls_port,omitempty"`
	// Plain says it carries plain IPv4-in-IPv6 (v4v6).
	Plain bool `json:"plain,omitempty"`
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Store is a lease.Store and lease.Watcher on etcd. Close it to give up the
// ownership lease.
type Store struct {
	opt     Options
	cli     *clientv3.Client
	addrs   string // key prefix of address records
	idents  string // key prefix of index entries
	root    string // the range Load and Watch cover
	members string // key prefix of member announcements

	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	lease      clientv3.LeaseID // 0: none live
	validUntil time.Time        // the ownership holds at least until then
	lost       chan struct{}    // closed when the current lease is lost
}

// Open connects to etcd, takes an ownership lease and keeps it alive until
// Close. ctx bounds the connection and the first grant.
func Open(ctx context.Context, opt Options) (*Store, error) {
	opt = opt.withDefaults()
	if len(opt.Endpoints) == 0 {
		return nil, errors.New("etcdstore: no endpoint")
	}
	if opt.Owner == "" {
		return nil, errors.New("etcdstore: no owner name")
	}
	if opt.TTL < 2*time.Second {
		return nil, fmt.Errorf("etcdstore: ownership TTL %v below 2s", opt.TTL)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            opt.Endpoints,
		TLS:                  opt.TLS,
		Username:             opt.Username,
		Password:             opt.Password,
		DialTimeout:          opt.DialTimeout,
		DialKeepAliveTime:    opt.TTL / 2,
		DialKeepAliveTimeout: opt.TTL / 2,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: client: %w", err)
	}
	base := strings.TrimSuffix(opt.Prefix, "/") + "/"
	root := base + "lease/"
	s := &Store{
		opt: opt, cli: cli, root: root, addrs: root + "a/", idents: root + "i/", members: base + "members/",
		done: make(chan struct{}), lost: make(chan struct{}),
	}
	if err := s.grantFirst(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	kctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.keepAlive(kctx)
	return s, nil
}

// Close revokes the ownership lease (the records still attached to it go
// with it) and disconnects.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	s.mu.Lock()
	id := s.lease
	s.lease = 0
	s.mu.Unlock()
	if id != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.opt.RequestTimeout)
		_, _ = s.cli.Revoke(ctx, id) // best effort: it expires after the TTL anyway
		cancel()
	}
	return s.cli.Close()
}

// Client returns the etcd client, for the other cluster state a gateway
// keeps next to its leases.
func (s *Store) Client() *clientv3.Client { return s.cli }

// MembersPrefix is the key prefix of the member announcements (Member, as JSON, under
// MembersPrefix()+name), for the nodes that watch them.
func (s *Store) MembersPrefix() string { return s.members }

// MaxChanges implements the lease package's batch limit: one change is one
// compare and one operation of a transaction.
func (s *Store) MaxChanges() int { return s.opt.MaxTxnOps }

// Ownership reports the ownership lease and until when it surely holds;
// ok is false once it was lost and no new one was granted yet.
func (s *Store) Ownership() (id int64, validUntil time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.lease), s.validUntil, s.lease != 0 && s.opt.Now().Before(s.validUntil)
}

// Members returns the gateways whose ownership lease lives, by name.
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.members, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("%w: etcd members: %w", lease.ErrStoreUnavailable, err)
	}
	out := make([]Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m Member
		if len(kv.Value) > maxValue || json.Unmarshal(kv.Value, &m) != nil {
			m = Member{} // announced by something else: shown by its key alone
		}
		m.Name = strings.TrimPrefix(string(kv.Key), s.members)
		out = append(out, m)
	}
	return out, nil
}

// Lost returns a channel closed when the current ownership lease is lost.
func (s *Store) Lost() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// grantFirst takes the first ownership lease. The name may still be held by this gateway's
// previous run (killed less than a TTL ago): its announcement expires within the TTL, which is
// waited for; a name still held after that belongs to another live gateway.
func (s *Store) grantFirst(ctx context.Context) error {
	deadline := s.opt.Now().Add(s.opt.TTL + time.Second)
	for {
		err := s.grant(ctx)
		if !errors.Is(err, ErrNameInUse) || !s.opt.Now().Before(deadline) {
			return err
		}
		sleep(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return err
		}
	}
}

func (s *Store) grant(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.RequestTimeout)
	defer cancel()
	start := s.opt.Now()
	g, err := s.cli.Grant(ctx, int64(s.opt.TTL/time.Second))
	if err != nil {
		return fmt.Errorf("etcdstore: grant ownership lease: %w", err)
	}
	m := s.opt.Member
	m.Name = s.opt.Owner
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	key := s.members + s.opt.Owner
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v), clientv3.WithLease(g.ID))).Commit()
	if err == nil && !resp.Succeeded {
		err = fmt.Errorf("%w: %q", ErrNameInUse, s.opt.Owner)
	}
	if err != nil {
		_, _ = s.cli.Revoke(ctx, g.ID)
		return fmt.Errorf("etcdstore: announce member %s: %w", s.opt.Owner, err)
	}
	s.mu.Lock()
	s.lease = g.ID
	s.validUntil = start.Add(time.Duration(g.TTL)*time.Second - s.margin())
	s.mu.Unlock()
	return nil
}

// keepAlive keeps the ownership lease alive; when it is lost it takes a
// new one (records of the old one are gone with it).
func (s *Store) keepAlive(ctx context.Context) {
	defer close(s.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		s.mu.Lock()
		id := s.lease
		s.mu.Unlock()
		if id == 0 {
			if err := s.grant(ctx); err != nil {
				s.opt.Log.Warn().Err(err).Msg("etcd: no ownership lease; new sessions are refused")
				sleep(ctx, backoff)
				backoff = min(2*backoff, s.opt.TTL/2)
				continue
			}
			s.opt.Log.Info().Int64("etcd_lease", int64(s.leaseID())).Msg("etcd: ownership lease granted")
			backoff = 100 * time.Millisecond
			continue
		}
		kctx, cancel := context.WithCancel(ctx)
		if ka, err := s.cli.KeepAlive(kctx, id); err == nil {
			s.followKeepAlives(id, ka)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if s.leaseID() != id {
			continue // lost while unrenewed: a new one is granted
		}
		// The stream ended: find out whether the lease still lives.
		tctx, cancel := context.WithTimeout(ctx, s.opt.RequestTimeout)
		ttl, err := s.cli.TimeToLive(tctx, id)
		cancel()
		switch {
		case err == nil && ttl.TTL > 0:
			s.renewed(id, 0)
			continue
		case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
			s.loseLease(id, "expired")
		default:
			s.mu.Lock()
			expired := !s.opt.Now().Before(s.validUntil)
			s.mu.Unlock()
			if expired {
				s.loseLease(id, "not renewed within its TTL")
			}
			sleep(ctx, backoff)
			backoff = min(2*backoff, s.opt.TTL/2)
		}
	}
}

// followKeepAlives records the keep-alive answers of lease id until their stream ends, and
// gives the ownership up (loseLease) the moment it can have lapsed without an answer: the
// client library keeps retrying a cut-off etcd for longer than the TTL.
func (s *Store) followKeepAlives(id clientv3.LeaseID, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	for {
		s.mu.Lock()
		wait := s.validUntil.Sub(s.opt.Now())
		s.mu.Unlock()
		t := time.NewTimer(max(wait, 0))
		select {
		case r, ok := <-ka:
			t.Stop()
			if !ok {
				return
			}
			s.renewed(id, time.Duration(r.TTL)*time.Second)
		case <-t.C:
			s.loseLease(id, "not renewed within its TTL")
			return
		}
	}
}

func (s *Store) leaseID() clientv3.LeaseID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lease
}

// renewed records a keep-alive of lease id answered with ttl (0: only
// known to be alive).
func (s *Store) renewed(id clientv3.LeaseID, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == id && ttl > 0 {
		s.validUntil = s.opt.Now().Add(ttl - s.margin())
	}
}

// margin is taken off every validity this process computes: etcd counted the TTL from
// before the answer arrived, so this gateway gives up its sessions before etcd can give
// their addresses to another.
func (s *Store) margin() time.Duration { return max(s.opt.TTL/5, 200*time.Millisecond) }

func (s *Store) loseLease(id clientv3.LeaseID, why string) {
	s.mu.Lock()
	if s.lease != id {
		s.mu.Unlock()
		return
	}
	s.lease = 0
	close(s.lost)
	s.lost = make(chan struct{})
	s.mu.Unlock()
	s.opt.Log.Error().Int64("etcd_lease", int64(id)).Str("reason", why).
		Msg("etcd: ownership lease lost; this gateway's sessions are no longer its own")
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (s *Store) addrKey(a netip.Addr) string { return s.addrs + a.String() }
func (s *Store) identKey(id string) string   { return s.idents + id }
func (s *Store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opt.RequestTimeout)
}

// Load reads every record and index entry at one revision.
func (s *Store) Load(ctx context.Context) (lease.Snapshot, error) {
	snap := lease.Snapshot{Index: make(map[string][]netip.Addr)}
	end := clientv3.GetPrefixRangeEnd(s.root)
	key := s.root
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(loadPage)}
		if snap.Revision != 0 {
			opts = append(opts, clientv3.WithRev(snap.Revision))
		}
		rctx, cancel := s.withTimeout(ctx)
		resp, err := s.cli.Get(rctx, key, opts...)
		cancel()
		if err != nil {
			return lease.Snapshot{}, fmt.Errorf("%w: etcd load: %w", lease.ErrStoreUnavailable, err)
		}
		if snap.Revision == 0 {
			snap.Revision = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := s.loadKV(&snap, kv); err != nil {
				return lease.Snapshot{}, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return snap, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (s *Store) loadKV(snap *lease.Snapshot, kv *mvccpb.KeyValue) error {
	k := string(kv.Key)
	switch {
	case strings.HasPrefix(k, s.addrs):
		r, err := s.decodeKV(kv)
		if err != nil {
			return err
		}
		snap.Leases = append(snap.Leases, r)
	case strings.HasPrefix(k, s.idents):
		addrs, err := decodeIndex(kv.Value)
		if err != nil {
			return fmt.Errorf("etcdstore: key %q: %w", k, err)
		}
		snap.Index[strings.TrimPrefix(k, s.idents)] = addrs
	}
	return nil
}

func (s *Store) decodeKV(kv *mvccpb.KeyValue) (lease.Record, error) {
	k := string(kv.Key)
	a, err := netip.ParseAddr(strings.TrimPrefix(k, s.addrs))
	if err != nil || !a.Is4() {
		return lease.Record{}, fmt.Errorf("%w: key %q", ErrCorrupt, k)
	}
	l, err := decodeRecord(a, kv.Value)
	if err != nil {
		return lease.Record{}, fmt.Errorf("etcdstore: key %q: %w", k, err)
	}
	return lease.Record{Lease: l, Version: uint64(kv.ModRevision)}, nil
}

// Commit applies txn in one etcd transaction: every address key's
// ModRevision is compared with its Prev; on a mismatch nothing is applied and
// the current records are read in the same transaction. On success each
// written key's new version (the transaction's revision) is in Change.Next.
func (s *Store) Commit(ctx context.Context, txn lease.Txn) error {
	n := len(txn.Leases) + len(txn.Index)
	if n == 0 {
		return nil
	}
	if len(txn.Leases) > s.opt.MaxTxnOps || n > s.opt.MaxTxnOps {
		return fmt.Errorf("etcdstore: transaction of %d changes, more than max-txn-ops %d", n, s.opt.MaxTxnOps)
	}
	s.mu.Lock()
	owner := s.lease
	s.mu.Unlock()
	cmps := make([]clientv3.Cmp, 0, len(txn.Leases))
	gets := make([]clientv3.Op, 0, len(txn.Leases))
	ops := make([]clientv3.Op, 0, n)
	for _, c := range txn.Leases {
		k := s.addrKey(c.Addr)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", int64(c.Prev)))
		gets = append(gets, clientv3.OpGet(k))
		if c.Lease == nil {
			ops = append(ops, clientv3.OpDelete(k))
			continue
		}
		v, err := encodeRecord(*c.Lease)
		if err != nil {
			return err
		}
		var opts []clientv3.OpOption
		// The writer of a session's record owns it (the Manager writes only
		// its own sessions' records).
		if st := c.Lease.State; st == lease.StateOffered || st == lease.StateActive {
			if owner == 0 {
				return ErrNoOwnership
			}
			opts = append(opts, clientv3.WithLease(owner))
		}
		ops = append(ops, clientv3.OpPut(k, string(v), opts...))
	}
	for _, ic := range txn.Index {
		k := s.identKey(ic.Identity)
		if len(ic.Addrs) == 0 {
			ops = append(ops, clientv3.OpDelete(k))
			continue
		}
		v, err := encodeIndex(ic.Addrs)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(k, string(v)))
	}
	cctx, cancel := s.withTimeout(ctx)
	resp, err := s.cli.Txn(cctx).If(cmps...).Then(ops...).Else(gets...).Commit()
	cancel()
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.loseLease(owner, "not found on commit")
			return fmt.Errorf("%w: %w", ErrNoOwnership, err)
		}
		return fmt.Errorf("%w: etcd commit: %w", lease.ErrStoreUnavailable, err)
	}
	if !resp.Succeeded {
		return s.conflict(txn, resp)
	}
	for i := range txn.Leases {
		if txn.Leases[i].Lease != nil {
			txn.Leases[i].Next = uint64(resp.Header.Revision)
		}
	}
	return nil
}

func (s *Store) conflict(txn lease.Txn, resp *clientv3.TxnResponse) error {
	for i, c := range txn.Leases {
		if i >= len(resp.Responses) {
			break
		}
		rr := resp.Responses[i].GetResponseRange()
		var cur *lease.Record
		var have uint64
		if rr != nil && len(rr.Kvs) > 0 {
			r, err := s.decodeKV(rr.Kvs[0])
			if err != nil {
				return err
			}
			cur, have = &r, r.Version
		}
		if have != c.Prev {
			return &lease.ConflictError{Addr: c.Addr, Expected: c.Prev, Current: cur}
		}
	}
	// Every key matched when read: changed again between compare and read
	// cannot happen within one transaction, but report the first key.
	return &lease.ConflictError{Addr: txn.Leases[0].Addr, Expected: txn.Leases[0].Prev}
}

// Watch implements lease.Watcher.
func (s *Store) Watch(ctx context.Context, from int64, apply func([]lease.Update)) error {
	next := from + 1
	backoff := 100 * time.Millisecond
	for {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wc := s.cli.Watch(wctx, s.root, clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithPrevKV())
		for resp := range wc {
			if resp.CompactRevision != 0 {
				cancel()
				return fmt.Errorf("%w: history compacted at revision %d (wanted %d)", lease.ErrResync, resp.CompactRevision, next)
			}
			if resp.Err() != nil {
				s.opt.Log.Warn().Err(resp.Err()).Msg("etcd: lease watch interrupted; watching again")
				break
			}
			if len(resp.Events) == 0 {
				continue
			}
			us := s.updates(ctx, resp.Events)
			next = resp.Events[len(resp.Events)-1].Kv.ModRevision + 1
			if len(us) > 0 {
				apply(us)
			}
			backoff = 100 * time.Millisecond
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sleep(ctx, backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}

// updates turns watch events into updates. This process's own writes come
// too: the Manager knows them by their version (a revision it already has).
func (s *Store) updates(ctx context.Context, evs []*clientv3.Event) []lease.Update {
	us := make([]lease.Update, 0, len(evs))
	alive := map[int64]bool{} // owner leases asked about in this batch
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		switch {
		case strings.HasPrefix(k, s.addrs):
			u, err := s.addrUpdate(ctx, ev, alive)
			if err != nil {
				s.opt.Log.Error().Err(err).Str("key", k).Msg("etcd: lease record ignored")
				continue
			}
			us = append(us, u)
		case strings.HasPrefix(k, s.idents):
			u := lease.Update{Identity: strings.TrimPrefix(k, s.idents)}
			if u.Identity == "" {
				continue
			}
			if ev.Type == mvccpb.PUT {
				addrs, err := decodeIndex(ev.Kv.Value)
				if err != nil {
					s.opt.Log.Error().Err(err).Str("key", k).Msg("etcd: index entry ignored")
					continue
				}
				u.Addrs = addrs
			}
			us = append(us, u)
		}
	}
	return us
}

func (s *Store) addrUpdate(ctx context.Context, ev *clientv3.Event, alive map[int64]bool) (lease.Update, error) {
	k := string(ev.Kv.Key)
	a, err := netip.ParseAddr(strings.TrimPrefix(k, s.addrs))
	if err != nil || !a.Is4() {
		return lease.Update{}, fmt.Errorf("%w: key %q", ErrCorrupt, k)
	}
	u := lease.Update{Addr: a, Revision: ev.Kv.ModRevision}
	if ev.Type == mvccpb.PUT {
		r, err := s.decodeKV(ev.Kv)
		if err != nil {
			return lease.Update{}, err
		}
		u.Record = &r
		return u, nil
	}
	if ev.PrevKv == nil {
		return u, nil
	}
	if prev, err := s.decodeKV(ev.PrevKv); err == nil {
		u.Prev = &prev
	}
	if id := ev.PrevKv.Lease; id != 0 && u.Prev != nil {
		live, asked := alive[id]
		if !asked {
			live = s.leaseLives(ctx, clientv3.LeaseID(id))
			alive[id] = live
		}
		u.Orphaned = !live
	}
	return u, nil
}

// leaseLives reports whether lease id still exists; when etcd cannot say,
// it is taken as alive (the delete is then not treated as orphaned).
func (s *Store) leaseLives(ctx context.Context, id clientv3.LeaseID) bool {
	tctx, cancel := s.withTimeout(ctx)
	defer cancel()
	r, err := s.cli.TimeToLive(tctx, id)
	if err != nil {
		return !errors.Is(err, rpctypes.ErrLeaseNotFound)
	}
	return r.TTL > 0
}
