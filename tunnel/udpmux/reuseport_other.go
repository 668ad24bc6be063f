//go:build !unix

package udpmux

import (
	"fmt"
	"runtime"
	"syscall"
)

// ReusePort fails where there is no SO_REUSEPORT (Windows): one socket per UDP port there.
func ReusePort(_, _ string, _ syscall.RawConn) error {
	return fmt.Errorf("udpmux: SO_REUSEPORT does not exist on %s", runtime.GOOS)
}
