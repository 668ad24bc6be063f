package certs

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"
)

// Defaults for Options.
const (
	DefaultLeafLifetime   = 24 * time.Hour
	DefaultServerLifetime = 7 * 24 * time.Hour
	DefaultTokenTTL       = time.Hour
	DefaultMaxTokenTTL    = 7 * 24 * time.Hour
	DefaultCRLValidity    = 24 * time.Hour
	// DefaultLockTimeout is how long Open waits for a CA that another process holds.
	DefaultLockTimeout = 200 * time.Millisecond
	// CALifetime is the validity of the root and the intermediate.
	CALifetime = 10 * 365 * 24 * time.Hour
	// minLeafLifetime is the shortest client certificate lifetime accepted.
	minLeafLifetime = time.Minute
)

// Options configure Init and Open. Zero values take the defaults.
type Options struct {
	Name string // prefixes the CA subjects ("<Name> Root CA")
	// DNSNames and IPAddresses go into the gateway's server certificate; at
	// least one is required.
	DNSNames       []string
	IPAddresses    []netip.Addr
	LeafLifetime   time.Duration // of client certificates
	ServerLifetime time.Duration // re-issued at two thirds of it
	MaxTokenTTL    time.Duration
	CRLValidity    time.Duration // nextUpdate - thisUpdate
	// LockTimeout is how long Open waits for the CA's files while another
	// process holds them before it fails with ErrLocked (default 200 ms).
	LockTimeout time.Duration
	// Now and After are the clock; nil means the wall clock, which smallstep
	// always uses for leaf validity and token expiry.
	Now    func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger zerolog.Logger // issuance and revocation records, at info level
	// Shared, in cluster mode, keeps the CA's state in etcd instead of ca.db and index.db.
	Shared *Shared
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "DSTM"
	}
	if o.LeafLifetime == 0 {
		o.LeafLifetime = DefaultLeafLifetime
	}
	if o.ServerLifetime == 0 {
		o.ServerLifetime = DefaultServerLifetime
	}
	if o.MaxTokenTTL == 0 {
		o.MaxTokenTTL = DefaultMaxTokenTTL
	}
	if o.CRLValidity == 0 {
		o.CRLValidity = DefaultCRLValidity
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.After == nil {
		o.After = time.After
	}
	return o
}

func (o Options) validate() error {
	switch {
	case len(o.DNSNames) == 0 && len(o.IPAddresses) == 0:
		return errors.New("certs: the server certificate needs at least one DNS name or IP address")
	case o.LeafLifetime < minLeafLifetime:
		return fmt.Errorf("certs: leaf lifetime %v is shorter than %v", o.LeafLifetime, minLeafLifetime)
	case o.ServerLifetime < time.Hour:
		return fmt.Errorf("certs: server certificate lifetime %v is shorter than 1h", o.ServerLifetime)
	case o.MaxTokenTTL <= 0:
		return errors.New("certs: maximum token lifetime must be positive")
	case o.CRLValidity < time.Minute:
		return errors.New("certs: CRL validity must be at least 1m")
	}
	for _, n := range o.DNSNames {
		if err := validateDNSName(n); err != nil {
			return fmt.Errorf("certs: server DNS name: %w", err)
		}
	}
	for _, a := range o.IPAddresses {
		if !a.IsValid() {
			return errors.New("certs: invalid server IP address")
		}
	}
	return nil
}
