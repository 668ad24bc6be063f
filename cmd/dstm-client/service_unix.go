//go:build !windows

package main

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
)

func newServiceManager() serviceManager {
	switch runtime.GOOS {
	case "linux":
		return systemd{dir: "/etc/systemd/system", run: runTool}
	case "darwin":
		return launchd{dir: "/Library/LaunchDaemons", run: runTool}
	}
	return unsupportedService{}
}

// unsupportedService: no service manager integration is built for this platform.
type unsupportedService struct{}

var errNoServiceManager = errors.New("service: not built for " + runtime.GOOS + ": start `dstm-client up` from the system's rc scripts")

func (unsupportedService) install(string, []string) (string, error) { return "", errNoServiceManager }
func (unsupportedService) uninstall() error                         { return errNoServiceManager }

// serviceRunCmd is Windows' service entry point; nothing elsewhere.
func serviceRunCmd(*globals) *cobra.Command { return nil }

func runTool(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
