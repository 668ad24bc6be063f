// Command dstm-gateway is the DSTM gateway: TSP server, IPv4 lease manager, tunnel end point
// and certificate authority in one process. See `dstm-gateway --help` and docs/operations.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dstmgw/dstm/gateway/admin"
)

// Exit codes beyond admin's: configuration errors are 2 (usage) so scripts can tell them apart.
const exitConfig = admin.ExitUsage

func main() {
	root := newRoot()
	if err := root.Execute(); err != nil {
		printError(os.Stderr, err)
		os.Exit(exitCode(err))
	}
}

// printError writes "dstm-gateway: ERROR" and exactly one newline, whatever the error's text
// ends with (cobra's "Did you mean this?" ends with its own newline).
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "dstm-gateway: %s\n", strings.TrimRight(err.Error(), " \t\r\n"))
}

// usageError marks an error in flags or configuration.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return exitConfig
	}
	return admin.ExitCode(err)
}

type globals struct {
	config string
	socket string
	json   bool
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "dstm-gateway",
		Short: "DSTM gateway: IPv4 leases and authenticated IPv4-over-IPv6 tunnels for IPv6 hosts",
		Long: `dstm-gateway gives IPv6-only remote hosts a temporary IPv4 address and carries their IPv4
traffic in IPv4-over-IPv6 tunnels (DTLS, TLS or plain IP protocol 4) authenticated with
certificates from its embedded CA. It speaks TSP (RFC 5572) on one port, TCP and UDP 3653.

Exit codes: 0 ok, 1 failure, 2 bad flags/config/request, 3 gateway not running,
4 permission denied, 5 not found, 6 unavailable.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.config, "config", "c", "/etc/dstm/gateway.yaml", "configuration file")
	root.PersistentFlags().StringVar(&g.socket, "socket", "", "admin socket (default: admin.socket from the configuration)")
	root.AddCommand(
		newInitCmd(g), newRunCmd(g), newCheckConfigCmd(g),
		newTokenCmd(g), newRevokeCmd(g), newLeasesCmd(g), newSessionsCmd(g), newKickCmd(g),
		newStatusCmd(g), newPasswdCmd(g), newPolicyCmd(g), newVersionCmd(),
	)
	return root
}
