package client

import (
	"crypto/tls"
	"sync"
)

// ticketCache keeps the TLS session tickets the gateway sends, so that a reconnect (after a
// network change, or a gateway restart) resumes TSP-SSL in one round trip instead of a full
// handshake. Tickets belong to the certificate they were issued for: a renewed certificate
// starts an empty cache, so that the gateway sees the new one.
type ticketCache struct {
	mu     sync.Mutex
	serial string
	cache  tls.ClientSessionCache
}

// ticketsPerCache bounds the tickets kept (one gateway, a few tickets from it).
const ticketsPerCache = 4

// forCertificate returns the cache of the certificate with the given serial.
func (t *ticketCache) forCertificate(serial string) tls.ClientSessionCache {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cache == nil || t.serial != serial {
		t.serial, t.cache = serial, tls.NewLRUClientSessionCache(ticketsPerCache)
	}
	return t.cache
}
