//go:build !linux

package client

import (
	"context"

	"github.com/rs/zerolog"
)

// addrChanges: no address notifications here; the ticker checks every roamInterval.
func addrChanges(context.Context, zerolog.Logger) <-chan struct{} { return nil }
