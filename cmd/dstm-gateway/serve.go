package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/dstmgw/dstm/gateway"
	"github.com/dstmgw/dstm/gateway/config"
	"github.com/dstmgw/dstm/internal/logging"
	"github.com/dstmgw/dstm/internal/version"
)

// loadConfig reads the configuration file; a missing file means the embedded defaults
// when allowMissing is set.
func loadConfig(path string, allowMissing bool) (config.Config, error) {
	cfg, err := config.Load(path)
	if allowMissing && errors.Is(err, fs.ErrNotExist) {
		return config.Default(), nil
	}
	if err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

func newRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the gateway (foreground; SIGHUP reloads policy, passwords, pools and log level)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := openGateway(g, os.Stderr)
			if err != nil {
				return err
			}
			defer s.gw.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go reloadOnHUP(ctx, g.config, s.gw, s.level, s.log)
			return s.gw.Run(ctx)
		},
	}
}

// opened is a gateway that has its configuration and state, before it touches the host.
type opened struct {
	gw    *gateway.Gateway
	level *logging.Level
	log   zerolog.Logger
}

// openGateway loads and validates the configuration (as check-config does) and opens the
// state: what `run` does before it touches the host. Every refusal of a configuration comes
// from here; warnings go to logOut.
func openGateway(g *globals, logOut io.Writer) (opened, error) {
	cfg, err := loadConfig(g.config, false)
	if err != nil {
		return opened{}, err
	}
	log, level, err := logging.New(logOut, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return opened{}, usageError{err}
	}
	for _, w := range cfg.Warnings() {
		log.Warn().Str("setting", w.Setting).Msg(w.Text)
	}
	gw, err := gateway.New(cfg, log, gateway.Options{Version: version.Version})
	if err != nil {
		return opened{}, err
	}
	return opened{gw: gw, level: level, log: log}, nil
}

// reloadOnHUP re-reads the configuration on SIGHUP and applies what can change at run time.
func reloadOnHUP(ctx context.Context, path string, gw *gateway.Gateway, level *logging.Level, log zerolog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := config.Load(path)
		if err != nil {
			log.Error().Err(err).Msg("reload refused: configuration invalid; keeping the running one")
			continue
		}
		if err := level.Set(cfg.Log.Level); err != nil {
			log.Error().Err(err).Msg("reload: log level")
		}
		restart, err := gw.Reload(cfg)
		if err != nil {
			log.Error().Err(err).Msg("reload failed")
			continue
		}
		for _, w := range cfg.Warnings() { // as at start: the new policy may bring its own
			log.Warn().Str("setting", w.Setting).Msg(w.Text)
		}
		ev := log.Info()
		if len(restart) > 0 {
			ev = log.Warn().Strs("restart_needed", restart)
		}
		ev.Msg("configuration reloaded")
	}
}

func newCheckConfigCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration file and print the effective configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(g.config, false)
			if err != nil {
				return err
			}
			out, err := cfg.Marshal()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# %s is valid; effective configuration:\n%s", g.config, out)
			for _, w := range cfg.Warnings() {
				fmt.Fprintf(cmd.OutOrStdout(), "# warning: %s: %s\n", w.Setting, w.Text)
			}
			return nil
		},
	}
}

func newInitCmd(g *globals) *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the state directory, the embedded CA and a commented configuration file",
		Long: `init creates, once, everything the gateway needs: the state directory (0700), the embedded
certificate authority (ECDSA P-256 root and intermediate, the gateway's server certificate, a
one-time-token provisioner and the CA database) and, if the configuration file does not exist,
a commented gateway.yaml built from the flags. It prints the root fingerprint that clients pin.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runInit(cmd, g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.stateDir, "state-dir", "", "state directory (default: state_dir from the configuration, /var/lib/dstm)")
	f.StringSliceVar(&o.names, "server-name", nil, "DNS name of the gateway in its certificate (repeatable)")
	f.StringSliceVar(&o.ips, "server-ip", nil, "IP address of the gateway in its certificate (repeatable)")
	f.StringVar(&o.listen, "listen", "", "TSP port address, e.g. [2001:db8::1]:3653 (default [::]:3653)")
	f.StringVar(&o.ipv6, "ipv6", "", "the gateway's outer IPv6 address (tep.ipv6)")
	f.StringVar(&o.pool, "pool", "", "IPv4 pool prefix (default 100.64.0.0/16)")
	f.StringVar(&o.innerV4, "inner-v4", "", "the gateway's inner IPv4 address (default 100.64.0.1)")
	f.StringVar(&o.socket, "admin-socket", "", "admin socket path (default /run/dstm/admin.sock)")
	f.BoolVar(&o.plain, "plain", false, "enable the plain v4v6 transport and plain TSP for trusted networks (needs --ipv6)")
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "dstm-gateway", version.Version)
		},
	}
}

func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(filepath.Clean(dir), 0o700)
}
