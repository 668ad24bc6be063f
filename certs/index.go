package certs

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The index is our own bbolt file next to smallstep's DB (which smallstep
// keeps locked). It maps identities to the serials issued for them and
// records revocations with the identity, so revocation by identity, events
// and the CRL need no access to smallstep's tables.
const (
	bucketIssued     = "issued"      // serial -> issuedRecord
	bucketByIdentity = "by_identity" // identity \x00 serial -> nil
	bucketRevoked    = "revoked"     // serial -> revokedRecord
	bucketMeta       = "meta"        // "crl_number" -> uint64
	keyCRLNumber     = "crl_number"
)

type issuedRecord struct {
	Identity string    `json:"identity"`
	NotAfter time.Time `json:"not_after"`
	Renewal  string    `json:"renewal_of,omitempty"`
	// SSO marks certificates issued at a sign-in: renewed only by signing in.
	SSO bool `json:"sso,omitempty"`
	// Key is the SHA-256 of a signed-in certificate's public key (hex): its renewals by
	// sign-in are linked by it.
	Key string `json:"key,omitempty"`
}

type revokedRecord struct {
	Identity   string    `json:"identity"`
	Reason     string    `json:"reason,omitempty"`
	ReasonCode int       `json:"reason_code"`
	RevokedAt  time.Time `json:"revoked_at"`
	NotAfter   time.Time `json:"not_after"`
}

// indexStore is the CA's index: the bbolt file of a single gateway (boltIndex), or etcd
// shared by the gateways of a cluster (etcdIndex).
type indexStore interface {
	recordIssued(serial string, rec issuedRecord) error
	issued(serial string) (issuedRecord, bool, error)
	serialsOf(identity string) ([]string, error)
	// recordRevoked fails with errIndexAlreadyRevoked if serial is revoked already.
	recordRevoked(serial string, rec revokedRecord) error
	revoked() (map[string]revokedRecord, error)
	// revokedOne returns the revocation of serial, if it is revoked (certs/list.go).
	revokedOne(serial string) (revokedRecord, bool, error)
	nextCRLNumber() (uint64, error)
	close() error
}

type boltIndex struct{ db *bolt.DB }

func openIndex(path string, lockTimeout time.Duration) (*boltIndex, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketIssued, bucketByIdentity, bucketRevoked, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open index: %w", err)
	}
	return &boltIndex{db: db}, nil
}

func (ix *boltIndex) close() error { return ix.db.Close() }

func identityKey(identity, serial string) []byte {
	return append(append([]byte(identity), 0), serial...)
}

func (ix *boltIndex) recordIssued(serial string, rec issuedRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = ix.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte(bucketIssued)).Put([]byte(serial), v); err != nil {
			return err
		}
		return tx.Bucket([]byte(bucketByIdentity)).Put(identityKey(rec.Identity, serial), nil)
	})
	if err != nil {
		return fmt.Errorf("index issued certificate %s: %w", serial, err)
	}
	return nil
}

func (ix *boltIndex) issued(serial string) (issuedRecord, bool, error) {
	var rec issuedRecord
	var found bool
	err := ix.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucketIssued)).Get([]byte(serial))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return rec, false, fmt.Errorf("index lookup %s: %w", serial, err)
	}
	return rec, found, nil
}

func (ix *boltIndex) serialsOf(identity string) ([]string, error) {
	var out []string
	prefix := identityKey(identity, "")
	err := ix.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucketByIdentity)).Cursor()
		for k, _ := c.Seek(prefix); k != nil && len(k) > len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			out = append(out, string(k[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index lookup %s: %w", identity, err)
	}
	return out, nil
}

// errIndexAlreadyRevoked is returned inside recordRevoked's transaction.
var errIndexAlreadyRevoked = errors.New("already revoked")

func (ix *boltIndex) recordRevoked(serial string, rec revokedRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return ix.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketRevoked))
		if b.Get([]byte(serial)) != nil {
			return errIndexAlreadyRevoked
		}
		return b.Put([]byte(serial), v)
	})
}

func (ix *boltIndex) revoked() (map[string]revokedRecord, error) {
	out, err := readBucket[revokedRecord](ix.db, bucketRevoked)
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	return out, nil
}

// readBucket decodes every JSON value of bucket, by key.
func readBucket[T any](db *bolt.DB, bucket string) (map[string]T, error) {
	out := map[string]T{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, v []byte) error {
			var rec T
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("%s %s: %w", bucket, k, err)
			}
			out[string(k)] = rec
			return nil
		})
	})
	return out, err
}

func (ix *boltIndex) nextCRLNumber() (uint64, error) {
	var n uint64
	err := ix.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucketMeta))
		if v := b.Get([]byte(keyCRLNumber)); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		n++
		return b.Put([]byte(keyCRLNumber), binary.BigEndian.AppendUint64(nil, n))
	})
	if err != nil {
		return 0, fmt.Errorf("CRL number: %w", err)
	}
	return n, nil
}

// issuedAll returns every issuance record (for the move to a shared index).
func (ix *boltIndex) issuedAll() (map[string]issuedRecord, error) {
	return readBucket[issuedRecord](ix.db, bucketIssued)
}
