package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dstmgw/dstm/auth"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
)

// client returns an admin client for the socket named by --socket or the configuration.
func (g *globals) client() (*admin.Client, error) {
	path := g.socket
	if path == "" {
		cfg, err := config.Load(g.config)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			path = config.Default().Admin.Socket
		case err != nil:
			return nil, usageError{err}
		default:
			path = cfg.Admin.Socket
		}
	}
	return admin.NewClient(path), nil
}

func addJSON(cmd *cobra.Command, g *globals) {
	cmd.Flags().BoolVar(&g.json, "json", false, "print JSON instead of a table")
}

func newLeasesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leases",
		Short: "List the leases that are not free (offered, active, held)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ls, err := c.Leases(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), ls)
			}
			return writeLeasesTable(cmd.OutOrStdout(), ls, time.Now())
		},
	}
	addJSON(cmd, g)
	return cmd
}

func newSessionsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List the live client sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ss, err := c.Sessions(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), ss)
			}
			return writeSessionsTable(cmd.OutOrStdout(), ss, time.Now())
		},
	}
	addJSON(cmd, g)
	return cmd
}

func newStatusCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running gateway's listeners and pool occupancy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return writeStatus(cmd.OutOrStdout(), st, time.Now())
		},
	}
	addJSON(cmd, g)
	return cmd
}

func newKickCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "kick SESSION",
		Short: "Close one session (its lease is held for the identity)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.Kick(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "session %s closed\n", args[0])
			return nil
		},
	}
}

func newRevokeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke IDENTITY|SERIAL",
		Short: "Revoke an identity's certificates (or one by serial) and close its sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.Revoke(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			return writeRevokeResult(cmd.OutOrStdout(), res)
		},
	}
	addJSON(cmd, g)
	return cmd
}

func newTokenCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token IDENTITY",
		Short: "Issue a one-time enrollment token for an identity",
		Long: `token prints a single-use enrollment token for IDENTITY (e.g. alice@corp.example). Give it to
the user with the root fingerprint; they run:
  dstm-client enroll --gateway HOST --token TOKEN --fingerprint FINGERPRINT`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.Token(cmd.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			return writeTokenResult(cmd.OutOrStdout(), res, time.Now())
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: ca.token_ttl)")
	addJSON(cmd, g)
	return cmd
}

func newPasswdCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "passwd USER",
		Short: "Set a PLAIN/DIGEST-MD5 password in the htdigest file (tsp.passwords)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(g.config, true)
			if err != nil {
				return err
			}
			if file == "" {
				file = cfg.TSP.Passwords
			}
			if file == "" {
				return usageError{errors.New("no password file: set tsp.passwords or --file")}
			}
			pass, err := readPassword(cmd)
			if err != nil {
				return err
			}
			if err := auth.SetDigestUser(file, args[0], cfg.TSP.Realm, pass); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s set in %s (send SIGHUP to the gateway to reload)\n", args[0], file)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "htdigest file (default: tsp.passwords)")
	return cmd
}

// readPassword reads a password from the terminal without echo, or one line from stdin.
func readPassword(cmd *cobra.Command) (string, error) {
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		return string(b), err
	}
	var line string
	if _, err := fmt.Fscanln(cmd.InOrStdin(), &line); err != nil {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	return line, nil
}
