// Package limit holds the admission bounds the gateway applies before it spends anything on a
// peer: a non-blocking semaphore, per-source counters (per address and per IPv6 /64) and a token
// bucket. None of them blocks; each answers at once and the caller counts the refusal.
package limit
