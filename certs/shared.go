package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/smallstep/certificates/db"
	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Shared keeps the CA's state in etcd for the gateways of a cluster, which all open the same
// CA keys (one gateway's state directory, copied): issued certificates and revocations (our
// index), the tokens smallstep marks used, and the CRL number. A revocation made on one
// gateway reaches the others through a watch (CA.Run).
type Shared struct {
	Client *clientv3.Client
	// Prefix is the cluster's key prefix (the lease store's); the CA's keys live under
	// Prefix + "ca/".
	Prefix string
	// Timeout bounds one etcd request (default 3 s).
	Timeout time.Duration
}

// ErrRootMismatch is returned by Open when the cluster's CA root is not this one's.
var ErrRootMismatch = errors.New("certs: the cluster's CA root is not this CA's root")

type sharedKeys struct {
	root, issued, byID, revoked, crlNumber, tokens, stepCerts, stepRevoked string
}

func newSharedKeys(prefix string) sharedKeys {
	b := strings.TrimSuffix(prefix, "/") + "/ca/"
	return sharedKeys{
		root: b + "root_fingerprint", issued: b + "issued/", byID: b + "by_identity/", revoked: b + "revoked/",
		crlNumber: b + "crl_number", tokens: b + "step/tokens/", stepCerts: b + "step/certs/", stepRevoked: b + "step/revoked/",
	}
}

func (sh *Shared) timeout() time.Duration {
	if sh.Timeout > 0 {
		return sh.Timeout
	}
	return 3 * time.Second
}

func (sh *Shared) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), sh.timeout())
}

// claimRoot records fingerprint as the cluster's CA root if none is, and fails with
// ErrRootMismatch if another one is.
func (sh *Shared) claimRoot(k sharedKeys, fingerprint string) error {
	ctx, cancel := sh.ctx()
	defer cancel()
	resp, err := sh.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k.root), "=", 0)).
		Then(clientv3.OpPut(k.root, fingerprint)).
		Else(clientv3.OpGet(k.root)).Commit()
	if err != nil {
		return fmt.Errorf("certs: etcd: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && string(kvs[0].Value) != fingerprint {
		return fmt.Errorf("%w: the cluster's is %s, this gateway's is %s (copy state_dir/ca from a gateway of the cluster before the first start)",
			ErrRootMismatch, kvs[0].Value, fingerprint)
	}
	return nil
}

// migrate copies the records of a single gateway's index (index.db) into the shared index,
// keeping what the cluster has already: the certificates this gateway issued before it joined
// stay renewable and revocable by identity. The file is renamed after, so it happens once.
func (ix *etcdIndex) migrate(path string, lockTimeout time.Duration) (int, error) {
	bi, err := openIndex(path, lockTimeout)
	if err != nil {
		return 0, err
	}
	issued, err := bi.issuedAll()
	if err == nil {
		var revoked map[string]revokedRecord
		if revoked, err = bi.revoked(); err == nil {
			err = ix.copyIn(issued, revoked)
		}
	}
	if cerr := bi.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("move %s into the cluster: %w", path, err)
	}
	if err := os.Rename(path, path+".moved-to-etcd"); err != nil {
		return 0, err
	}
	return len(issued), nil
}

func (ix *etcdIndex) copyIn(issued map[string]issuedRecord, revoked map[string]revokedRecord) error {
	for serial, rec := range issued {
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := putIfAbsent(ix.sh, ix.k.issued+serial, v); err != nil {
			return err
		}
		if err := putIfAbsent(ix.sh, ix.k.byID+rec.Identity+"/"+serial, nil); err != nil {
			return err
		}
	}
	for serial, rec := range revoked {
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := putIfAbsent(ix.sh, ix.k.revoked+serial, v); err != nil {
			return err
		}
	}
	return nil
}

// migrateStep copies smallstep's database of a single gateway (ca.db: the tokens it marked
// used, the certificates it stored, their revocations) into the shared one, so a token spent
// before the gateway joined stays spent. The file is renamed after.
func (d *stepDB) migrate(path string, lockTimeout time.Duration) error {
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("move %s into the cluster: %w", path, err)
	}
	tables := []struct{ bucket, prefix string }{
		{"used_ott", d.k.tokens}, {"x509_certs", d.k.stepCerts}, {"revoked_x509_certs", d.k.stepRevoked},
	}
	err = bdb.View(func(tx *bolt.Tx) error {
		for _, t := range tables {
			b := tx.Bucket([]byte(t.bucket))
			if b == nil {
				continue
			}
			err := b.ForEach(func(k, v []byte) error {
				if t.prefix == d.k.tokens {
					v = []byte("used")
				}
				return putIfAbsent(d.sh, t.prefix+string(k), v)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := bdb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("move %s into the cluster: %w", path, err)
	}
	return os.Rename(path, path+".moved-to-etcd")
}

func putIfAbsent(sh *Shared, k string, v []byte) error {
	ctx, cancel := sh.ctx()
	defer cancel()
	_, err := sh.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).Commit()
	return err
}

// etcdIndex is the indexStore of a cluster.
type etcdIndex struct {
	sh *Shared
	k  sharedKeys
}

func (ix *etcdIndex) close() error { return nil } // the client belongs to the caller

// recordIssued records a certificate; a renewal only while the certificate it renews is not
// revoked (a revocation on another gateway may have come after this one's check), else it
// fails with ErrRevoked and the renewal's certificate is never handed out.
func (ix *etcdIndex) recordIssued(serial string, rec issuedRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := ix.sh.ctx()
	defer cancel()
	txn := ix.sh.Client.Txn(ctx)
	if rec.Renewal != "" {
		txn = txn.If(clientv3.Compare(clientv3.CreateRevision(ix.k.revoked+rec.Renewal), "=", 0))
	}
	resp, err := txn.Then(
		clientv3.OpPut(ix.k.issued+serial, string(v)),
		clientv3.OpPut(ix.k.byID+rec.Identity+"/"+serial, ""),
	).Commit()
	if err != nil {
		return fmt.Errorf("index issued certificate %s: etcd: %w", serial, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s was revoked while it was being renewed", ErrRevoked, rec.Renewal)
	}
	return nil
}

func (ix *etcdIndex) issued(serial string) (issuedRecord, bool, error) {
	var rec issuedRecord
	ctx, cancel := ix.sh.ctx()
	defer cancel()
	resp, err := ix.sh.Client.Get(ctx, ix.k.issued+serial)
	if err != nil {
		return rec, false, fmt.Errorf("index lookup %s: etcd: %w", serial, err)
	}
	if len(resp.Kvs) == 0 {
		return rec, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return rec, false, fmt.Errorf("index lookup %s: %w", serial, err)
	}
	return rec, true, nil
}

func (ix *etcdIndex) serialsOf(identity string) ([]string, error) {
	ctx, cancel := ix.sh.ctx()
	defer cancel()
	p := ix.k.byID + identity + "/"
	resp, err := ix.sh.Client.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("index lookup %s: etcd: %w", identity, err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), p))
	}
	return out, nil
}

func (ix *etcdIndex) recordRevoked(serial string, rec revokedRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := ix.sh.ctx()
	defer cancel()
	k := ix.k.revoked + serial
	resp, err := ix.sh.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).Commit()
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	if !resp.Succeeded {
		return errIndexAlreadyRevoked
	}
	return nil
}

func (ix *etcdIndex) revoked() (map[string]revokedRecord, error) {
	ctx, cancel := ix.sh.ctx()
	defer cancel()
	resp, err := ix.sh.Client.Get(ctx, ix.k.revoked, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("load revocations: etcd: %w", err)
	}
	out := make(map[string]revokedRecord, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec revokedRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("revocation %s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), ix.k.revoked)] = rec
	}
	return out, nil
}

func (ix *etcdIndex) nextCRLNumber() (uint64, error) {
	for range 16 {
		ctx, cancel := ix.sh.ctx()
		resp, err := ix.sh.Client.Get(ctx, ix.k.crlNumber)
		if err != nil {
			cancel()
			return 0, fmt.Errorf("CRL number: etcd: %w", err)
		}
		var n uint64
		var mod int64
		if len(resp.Kvs) == 1 {
			if n, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64); err != nil {
				cancel()
				return 0, fmt.Errorf("CRL number %q: %w", resp.Kvs[0].Value, err)
			}
			mod = resp.Kvs[0].ModRevision
		}
		n++
		tr, err := ix.sh.Client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(ix.k.crlNumber), "=", mod)).
			Then(clientv3.OpPut(ix.k.crlNumber, strconv.FormatUint(n, 10))).Commit()
		cancel()
		if err != nil {
			return 0, fmt.Errorf("CRL number: etcd: %w", err)
		}
		if tr.Succeeded {
			return n, nil
		}
	}
	return 0, errors.New("CRL number: too much contention")
}

// followRevoked calls fn with every revocation written after revision from, until ctx ends;
// it returns only then. A broken watch starts again from where it was; one that fell behind a
// compaction reads every revocation again (fn sees some twice).
func (ix *etcdIndex) followRevoked(ctx context.Context, from int64, fn func(serial string, rec revokedRecord)) {
	next := from + 1
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		compacted := false
		for resp := range ix.sh.Client.Watch(wctx, ix.k.revoked, clientv3.WithPrefix(), clientv3.WithRev(next)) {
			if resp.CompactRevision != 0 {
				compacted = true
				break
			}
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				next = ev.Kv.ModRevision + 1
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				// A record that does not decode still revokes its serial (the key).
				var rec revokedRecord
				_ = json.Unmarshal(ev.Kv.Value, &rec)
				fn(strings.TrimPrefix(string(ev.Kv.Key), ix.k.revoked), rec)
			}
		}
		cancel()
		if compacted {
			if rev, err := ix.revision(); err == nil {
				if all, err := ix.revoked(); err == nil {
					for serial, rec := range all {
						fn(serial, rec)
					}
					next = rev + 1
				}
			}
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// revision returns etcd's current revision (a watch started from it misses nothing
// written after it).
func (ix *etcdIndex) revision() (int64, error) {
	ctx, cancel := ix.sh.ctx()
	defer cancel()
	resp, err := ix.sh.Client.Get(ctx, ix.k.revoked, clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("etcd: %w", err)
	}
	return resp.Header.Revision, nil
}

// stepDB is smallstep's database (db.AuthDB) on etcd: the used tokens (single use across
// the cluster), the certificates it issued and their revocations.
type stepDB struct {
	sh *Shared
	k  sharedKeys
}

var _ db.AuthDB = (*stepDB)(nil)

func (d *stepDB) IsRevoked(sn string) (bool, error) {
	ctx, cancel := d.sh.ctx()
	defer cancel()
	resp, err := d.sh.Client.Get(ctx, d.k.stepRevoked+sn, clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

func (d *stepDB) IsSSHRevoked(string) (bool, error) { return false, nil }

func (d *stepDB) Revoke(rci *db.RevokedCertificateInfo) error {
	v, err := json.Marshal(rci)
	if err != nil {
		return err
	}
	ctx, cancel := d.sh.ctx()
	defer cancel()
	k := d.k.stepRevoked + rci.Serial
	resp, err := d.sh.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return db.ErrAlreadyExists
	}
	return nil
}

func (d *stepDB) RevokeSSH(*db.RevokedCertificateInfo) error {
	return errors.New("certs: SSH certificates are not issued")
}

func (d *stepDB) GetCertificate(serial string) (*x509.Certificate, error) {
	ctx, cancel := d.sh.ctx()
	defer cancel()
	resp, err := d.sh.Client.Get(ctx, d.k.stepCerts+serial)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("certificate %s not found", serial)
	}
	return x509.ParseCertificate(resp.Kvs[0].Value)
}

// StoreRenewedCertificate is how smallstep stores a renewal: the new leaf.
func (d *stepDB) StoreRenewedCertificate(_ *x509.Certificate, chain ...*x509.Certificate) error {
	return d.StoreCertificateChain(chain...)
}

// StoreCertificateChain is how smallstep stores what it signs: the leaf.
func (d *stepDB) StoreCertificateChain(chain ...*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	ctx, cancel := d.sh.ctx()
	defer cancel()
	_, err := d.sh.Client.Put(ctx, d.k.stepCerts+chain[0].SerialNumber.String(), string(chain[0].Raw))
	return err
}

// UseToken marks token id used; false if it was already (on any gateway of the cluster).
func (d *stepDB) UseToken(id, _ string) (bool, error) {
	ctx, cancel := d.sh.ctx()
	defer cancel()
	k := d.k.tokens + id
	resp, err := d.sh.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, "used")).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (d *stepDB) IsSSHHost(string) (bool, error)          { return false, nil }
func (d *stepDB) GetSSHHostPrincipals() ([]string, error) { return nil, nil }
func (d *stepDB) Shutdown() error                         { return nil }
