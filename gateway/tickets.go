package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dstmgw/dstm/internal/fsutil"
)

// TLS session tickets let our clients resume TSP-SSL with one round trip and no signature or
// certificate check of the full handshake; the certificate and its revocation are checked
// again on every resumption (VerifyConnection runs for resumed connections too). The keys that
// encrypt the tickets are kept in the state directory, so that tickets survive a restart: the
// reconnect storm after one resumes instead of running full handshakes. A new key is made
// every ticketKeyLife; tickets of the one before stay valid for another ticketKeyLife.
const (
	TicketKeysFile = "tls-tickets.keys"
	ticketKeyLife  = 24 * time.Hour
	ticketKeyCheck = time.Hour // how often a running gateway looks at its key's age
)

// ticketKey is one session ticket key and when it was made.
type ticketKey struct {
	made time.Time
	key  [32]byte
}

// ticketKeys loads the keys of path, makes a new one if the newest is older than ticketKeyLife
// (or there is none), drops the expired ones, and saves what it changed. Newest first.
func ticketKeys(path string, now time.Time) ([]ticketKey, error) {
	keys, err := readTicketKeys(path)
	if err != nil {
		return nil, err
	}
	keys = slices.DeleteFunc(keys, func(k ticketKey) bool { return now.Sub(k.made) >= 2*ticketKeyLife })
	if len(keys) > 0 && now.Sub(keys[0].made) < ticketKeyLife {
		return keys, nil
	}
	fresh := ticketKey{made: now}
	if _, err := rand.Read(fresh.key[:]); err != nil {
		return nil, err
	}
	keys = append([]ticketKey{fresh}, keys...)[:min(len(keys)+1, 2)]
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%d %s\n", k.made.Unix(), hex.EncodeToString(k.key[:]))
	}
	if err := fsutil.WriteFileAtomic(path, b.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("session ticket keys: %w", err)
	}
	return keys, nil
}

func readTicketKeys(path string) ([]ticketKey, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("session ticket keys: %w", err)
	}
	var keys []ticketKey
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var k ticketKey
		secs, err := strconv.ParseInt(f[0], 10, 64)
		raw, herr := hex.DecodeString(f[len(f)-1])
		if len(f) != 2 || err != nil || herr != nil || len(raw) != len(k.key) {
			return nil, fmt.Errorf("session ticket keys: %s line %d: want <unix time> <64 hex digits> (remove the file for new keys: clients then run one full handshake)", filepath.Base(path), n)
		}
		k.made = time.Unix(secs, 0)
		copy(k.key[:], raw)
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b ticketKey) int { return b.made.Compare(a.made) })
	return keys, nil
}

// setTicketKeys loads (or rotates) the ticket keys and hands them to the TLS configuration.
func (g *Gateway) setTicketKeys() error {
	keys, err := ticketKeys(filepath.Join(g.cfg.StateDir, TicketKeysFile), g.now())
	if err != nil {
		return err
	}
	raw := make([][32]byte, len(keys))
	for i, k := range keys {
		raw[i] = k.key
	}
	g.tlsConfig.SetSessionTicketKeys(raw)
	return nil
}

// rotateTicketKeys keeps the ticket keys current while the gateway runs.
func (g *Gateway) rotateTicketKeys(ctx context.Context) error {
	tick := time.NewTicker(ticketKeyCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := g.setTicketKeys(); err != nil {
				g.log.Warn().Err(err).Msg("session ticket keys not rotated; the current ones stay")
			}
		}
	}
}
