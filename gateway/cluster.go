package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/gateway/lease"
	"github.com/dstmgw/dstm/gateway/lease/etcdstore"
)

// openEtcd connects to the cluster's etcd and takes this gateway's ownership lease. Errors
// name the configuration field they come from.
func (g *Gateway) openEtcd(e *config.Etcd) (*etcdstore.Store, error) {
	name := e.Name
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("store.etcd.name: not set, and no host name: %w", err)
		}
		name = strings.SplitN(h, ".", 2)[0]
		if !config.ValidNodeName(name) {
			return nil, fmt.Errorf("store.etcd.name: not set, and the host name %q is not a valid name: set one", h)
		}
	}
	opt := etcdstore.Options{
		Endpoints: e.Endpoints, Prefix: e.Prefix, Owner: name, TTL: e.TTL.D(),
		DialTimeout: e.DialTimeout.D(), RequestTimeout: e.RequestTimeout.D(), MaxTxnOps: e.MaxTxnOps,
		Username: e.Username,
		Member:   etcdstore.Member{Version: g.version, Started: g.now(), Pools: poolsFingerprint(g.cfg.Pools)},
		Log:      g.log.With().Str("component", "etcd").Logger(),
		Now:      g.now,
	}
	for _, a := range g.cfg.Listen.Addresses {
		opt.Member.Listen = append(opt.Member.Listen, a.String())
	}
	opt.Member.Roles = g.cfg.Roles
	if !g.cfg.Has(config.RoleControl) {
		opt.Member.TEP = g.tepInfo()
	}
	if e.PasswordFile != "" {
		b, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.password_file: %w", err)
		}
		opt.Password = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	}
	if t := e.TLS; t != nil {
		tc, err := etcdTLS(t)
		if err != nil {
			return nil, err
		}
		opt.TLS = tc
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdOpenTimeout(e))
	defer cancel()
	st, err := etcdstore.Open(ctx, opt)
	if err != nil {
		return nil, fmt.Errorf("store.etcd (%s): %w", strings.Join(e.Endpoints, ","), err)
	}
	g.node = name
	g.log.Info().Str("node", name).Strs("etcd", e.Endpoints).Msg("cluster mode: leases in etcd")
	if ms, err := st.Members(ctx); err == nil {
		for _, w := range poolWarnings(name, poolsFingerprint(g.cfg.Pools), ms) {
			g.log.Warn().Str("setting", "pools").Msg(w)
		}
	}
	return st, nil
}

// poolsFingerprint is a short hash of the pools as configured.
func poolsFingerprint(pools []config.Pool) string {
	b, _ := json.Marshal(pools)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// poolWarnings names the members whose pools differ from this gateway's.
func poolWarnings(self, fp string, ms []etcdstore.Member) []string {
	var out []string
	for _, m := range ms {
		if m.Name != self && m.Pools != "" && m.Pools != fp {
			out = append(out, fmt.Sprintf("pools differ from those of cluster member %s: clients moving between the two may not keep their addresses", m.Name))
		}
	}
	return out
}

// closeEtcd closes the etcd store of a gateway that failed to start.
func (g *Gateway) closeEtcd() {
	if g.etcd != nil {
		g.etcd.Close()
	}
}

// etcdOpenTimeout bounds the connection and the first grant at start.
func etcdOpenTimeout(e *config.Etcd) time.Duration {
	dial, req := e.DialTimeout.D(), e.RequestTimeout.D()
	if dial == 0 {
		dial = etcdstore.DefaultDialTimeout
	}
	if req == 0 {
		req = etcdstore.DefaultRequestTimeout
	}
	ttl := e.TTL.D()
	if ttl == 0 {
		ttl = etcdstore.DefaultTTL
	}
	// A restart after a crash waits up to the TTL for its previous run's name to expire.
	return dial + req + ttl + time.Second
}

func etcdTLS(t *config.EtcdTLS) (*tls.Config, error) {
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("store.etcd.tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("store.etcd.tls.ca: no PEM certificate in %s", t.CA)
	}
	tc := &tls.Config{RootCAs: pool, ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.Cert != "" {
		c, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.tls.cert/key: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// fenceOwnership ends every session when this gateway's ownership lease in etcd is lost
// (cut off from etcd for the TTL, or etcd says it expired): the other gateways may hand their
// addresses to others from then on. New sessions are refused until a new lease is granted.
func (g *Gateway) fenceOwnership(ctx context.Context) error {
	lost := g.etcd.Lost()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
		}
		// The channel of the next loss, taken before ending the sessions: a loss while they
		// end is not missed.
		lost = g.etcd.Lost()
		g.log.Error().Int("sessions", g.ctl.Count()).Str("reason", string(lease.ReasonOwnership)).
			Msg("etcd ownership lost: every session ended; new sessions are refused until a new ownership lease is granted")
		g.ctl.EndAll(lease.ReasonOwnership)
	}
}

// clusterStatus is the cluster part of `status`.
func (g *Gateway) clusterStatus(ctx context.Context) *admin.Cluster {
	if g.etcd == nil {
		return nil
	}
	_, until, ok := g.etcd.Ownership()
	c := &admin.Cluster{Node: g.node, Endpoints: g.cfg.Store.Etcd.Endpoints, Owner: ok, ValidUntil: until}
	ms, err := g.etcd.Members(ctx)
	if err != nil {
		c.Error = err.Error()
	}
	c.Warnings = poolWarnings(g.node, poolsFingerprint(g.cfg.Pools), ms)
	for _, m := range ms {
		c.Members = append(c.Members, admin.Member{Name: m.Name, Version: m.Version, Listen: m.Listen, Started: m.Started})
	}
	return c
}

// ClusterOwner is the metrics' cluster source.
func (g *Gateway) ClusterOwner() (string, bool) {
	_, _, ok := g.etcd.Ownership()
	return g.node, ok
}
