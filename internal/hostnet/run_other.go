//go:build !linux

package hostnet

import (
	"fmt"
	"os/exec"
	"strings"
)

// runCommand runs c; a failure carries the program's output.
func runCommand(c command) error {
	out, err := exec.Command(c.name, c.args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("hostnet: %s: %w: %s", c, err, strings.TrimSpace(string(out)))
	}
	return nil
}
