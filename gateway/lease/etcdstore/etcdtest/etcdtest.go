// Package etcdtest starts real etcd members in-process (etcd's embed
// package) on loopback for tests: the same server code as the etcd binary,
// with fast elections and no fsync.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds the wait for a cluster to be ready.
const startTimeout = 30 * time.Second

// Cluster is a running etcd cluster; members stop at the test's cleanup.
type Cluster struct {
	t       testing.TB
	mu      sync.Mutex
	members []*embed.Etcd // nil once stopped
	clients []string
}

// Options vary the members.
type Options struct {
	// Fsync keeps etcd's fsync of its log (off by default: tests need no durability, and
	// benchmarks that compare with bbolt's fsync'd commits turn it on).
	Fsync bool
}

// Start starts an n-member cluster and waits until it is ready.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, members: make([]*embed.Etcd, n)}
	type urls struct{ peer, client url.URL }
	us := make([]urls, n)
	var initial []string
	for i := range n {
		us[i] = urls{peer: freeURL(t), client: freeURL(t)}
		initial = append(initial, fmt.Sprintf("m%d=%s", i, us[i].peer.String()))
		c.clients = append(c.clients, us[i].client.String())
	}
	dir := t.TempDir()
	errs := make(chan error, n)
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = fmt.Sprintf("%s/m%d", dir, i)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{us[i].peer}, []url.URL{us[i].peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{us[i].client}, []url.URL{us[i].client}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "dstm-test"
		cfg.TickMs, cfg.ElectionMs = 50, 500
		cfg.UnsafeNoFsync = !o.Fsync
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		go func() {
			e, err := embed.StartEtcd(cfg)
			if err != nil {
				errs <- fmt.Errorf("member %d: %w", i, err)
				return
			}
			c.mu.Lock()
			c.members[i] = e
			c.mu.Unlock()
			select {
			case <-e.Server.ReadyNotify():
				errs <- nil
			case <-time.After(startTimeout):
				errs <- fmt.Errorf("member %d not ready after %v", i, startTimeout)
			}
		}()
	}
	t.Cleanup(c.close)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("etcd: %v", err)
		}
	}
	return c
}

// Endpoints returns the client URLs of every member.
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.clients...) }

// Stop stops member i (its data stays; it is not restarted).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

func (c *Cluster) close() {
	for i := range c.members {
		c.Stop(i)
	}
}

func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}
