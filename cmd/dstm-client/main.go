// Command dstm-client is the remote worker's side of the DSTM gateway: it enrolls a
// certificate with a one-time token, brings the IPv4 tunnel up and keeps it up.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dstmgw/dstm/certs/enroll"
	"github.com/dstmgw/dstm/client"
	"github.com/dstmgw/dstm/internal/hostnet"
	"github.com/dstmgw/dstm/internal/logging"
	"github.com/dstmgw/dstm/internal/version"
)

// Exit codes.
const (
	exitFailure = 1 // any failure
	exitUsage   = 2 // bad flags
	exitDown    = 3 // status: no tunnel up
)

const statusFile = "status.json"

func main() {
	root := newRoot()
	if err := root.Execute(); err != nil {
		printError(os.Stderr, err)
		var ue usageError
		var de downError
		switch {
		case errors.As(err, &ue):
			os.Exit(exitUsage)
		case errors.As(err, &de):
			os.Exit(exitDown)
		}
		os.Exit(exitFailure)
	}
}

// printError writes "dstm-client: ERROR" and exactly one newline, whatever the error's text
// ends with (cobra's "Did you mean this?" ends with its own newline).
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "dstm-client: %s\n", strings.TrimRight(err.Error(), " \t\r\n"))
}

type usageError struct{ error }
type downError struct{ error }

type globals struct {
	stateDir string
	logLevel string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "dstm-client",
		Short: "DSTM client: IPv4 over an IPv6-only network through a DSTM gateway",
		Long: `dstm-client enrolls a certificate with the gateway (one-time token, key generated locally),
then keeps an authenticated IPv4 tunnel up: TSP-SSL for control, DTLS for data (TLS stream
fallback when UDP is blocked), lease renewal, reconnection and roaming.

Exit codes: 0 ok, 1 failure, 2 bad flags, 3 (status) no tunnel up.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", defaultStateDir(), "client state directory (key, certificates, status)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	root.AddCommand(newEnrollCmd(g), newUpCmd(g), newDownCmd(g), newStatusCmd(g), newKillSwitchCmd(), newServiceCmd(g), newVersionCmd())
	return root
}

func newEnrollCmd(g *globals) *cobra.Command {
	var o enroll.Options
	var signIn, browser bool
	var configFile, providerCA string
	cmd := &cobra.Command{
		Use:   "enroll (--gateway HOST[:PORT] --token TOKEN [--fingerprint FP] | --sso --gateway HOST[:PORT] --fingerprint FP [--browser] | --config FILE)",
		Short: "Get a certificate from the gateway with a one-time token or by signing in (the key never leaves this host)",
		Long: `enroll gets a client certificate. With --token, the one-time token from the operator.
With --sso, by signing in at the company's identity provider, as the gateway names it: the
device flow prints an address and a code to enter there (any device with a browser will do);
--browser opens this machine's browser instead. --config reads gateway, fingerprint and sso
from the file the web console offers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				f, err := readEnrollFile(configFile)
				if err != nil {
					return usageError{err}
				}
				o.Gateway, o.Fingerprint = f.Gateway, f.Fingerprint
				signIn = signIn || f.SSO
			}
			if signIn && o.Token != "" {
				return usageError{errors.New("--sso and --token exclude each other")}
			}
			if o.Gateway == "" || (!signIn && o.Token == "") {
				return usageError{errors.New("--gateway and --token (or --sso) are required")}
			}
			o.Gateway = withPort(o.Gateway)
			o.StateDir = g.stateDir
			var st *enroll.State
			var err error
			if signIn {
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
				defer cancel()
				st, err = enroll.EnrollSSO(ctx, enroll.SSOOptions{
					Gateway: o.Gateway, ServerName: o.ServerName, Fingerprint: o.Fingerprint, StateDir: g.stateDir,
					Browser: browser, Prompt: cmd.ErrOrStderr(), ProviderCAFile: providerCA,
					OpenURL: func(u string) error { return openBrowser(ctx, u) },
				})
			} else {
				ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
				defer cancel()
				st, err = enroll.Enroll(ctx, o)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Enrolled as %s; certificate valid until %s\nRoot pinned: %s\nCredentials in %s\n",
				st.Identity, st.Leaf.NotAfter.Format(time.RFC3339), st.Fingerprint(), g.stateDir)
			if len(st.Leaf.Subject.OrganizationalUnit) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "Groups: %s\n", strings.Join(st.Leaf.Subject.OrganizationalUnit, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Gateway, "gateway", "", "gateway host[:port] (port 3653 by default)")
	f.StringVar(&o.Token, "token", "", "one-time enrollment token from `dstm-gateway token`")
	f.StringVar(&o.Fingerprint, "fingerprint", "", "SHA-256 fingerprint of the gateway's root CA (default: from the token; required with --sso)")
	f.StringVar(&o.ServerName, "server-name", "", "name the gateway's certificate carries (default: the gateway host)")
	f.BoolVar(&signIn, "sso", false, "sign in at the company's identity provider instead of a token")
	f.BoolVar(&browser, "browser", false, "with --sso: sign in in this machine's browser (default: a code to enter on any device)")
	f.StringVar(&configFile, "config", "", "read gateway, fingerprint and sso from this file (from the web console)")
	f.StringVar(&providerCA, "sso-ca", "", "PEM roots for the identity provider's TLS certificate, if not in the system's")
	return cmd
}

func newUpCmd(g *globals) *cobra.Command {
	var cfg client.Config
	var gateways []string
	var statusSocket string
	cmd := &cobra.Command{
		Use:   "up --gateway HOST[:PORT][,HOST[:PORT]...]",
		Short: "Bring the tunnel up and keep it up (foreground; SIGINT/SIGTERM or `down` to stop)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, _, err := logging.New(os.Stderr, g.logLevel, "auto")
			if err != nil {
				return usageError{err}
			}
			if len(gateways) == 0 {
				return usageError{errors.New("--gateway is required")}
			}
			cfg.Gateway, cfg.Gateways = gateways[0], gateways[1:]
			cfg.StateDir, cfg.Logger = g.stateDir, log
			var ss *statusServer
			cfg.OnState = func(s client.Status) {
				writeStatus(g.stateDir, s)
				if ss != nil {
					ss.set(s)
				}
			}
			c, err := client.New(cfg)
			if err != nil {
				return err
			}
			if statusSocket != "" {
				if ss, err = listenStatus(statusSocket); err != nil {
					return err
				}
				defer ss.close()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			defer os.Remove(filepath.Join(g.stateDir, statusFile))
			return c.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&gateways, "gateway", nil, "gateway host[:port] (port 3653 by default); the gateways of a cluster as a comma-separated list or repeated, tried in order")
	f.StringVar(&cfg.ServerName, "server-name", "", "name the gateway's certificate carries (default: the gateway host)")
	f.StringVar(&cfg.Transport, "transport", "auto", "data transport: auto (DTLS, TLS fallback), dtls, tls, plain (trusted networks)")
	f.StringVar(&cfg.Device, "device", "dstmc0", "TUN device name")
	f.DurationVar(&cfg.DTLSTimeout, "dtls-timeout", 3*time.Second, "time to wait for DTLS before falling back to TLS")
	f.BoolVar(&cfg.ParkControl, "park-control", false, "with DTLS, close the control connection while the link carries the session and reconnect it only to renew the lease (less gateway memory per session; a dead gateway is noticed by keepalives, not at once)")
	f.BoolVar(&cfg.KillSwitch, "kill-switch", false, "keep the tunnel's routes blocked after up ends or dies, until `dstm-client kill-switch off`")
	f.StringVar(&statusSocket, "status-socket", "", "also serve the status on this unix socket, to every local user (service install sets "+defaultStatusSocket()+")")
	f.StringSliceVar(&cfg.Proxy, "proxy", nil, "rootless mode: no TUN device, no root; serve the tunnel as loopback proxies, socks5://127.0.0.1:1080 and/or http://127.0.0.1:8080 (comma-separated or repeated)")
	f.StringVar(&cfg.DNS, "dns", client.DNSAuto, "the gateway's DNS servers and domains: auto (systemd-resolved where it runs, else /etc/resolv.conf; off with --proxy), resolved, resolv.conf, off")
	f.StringVar(&cfg.ResolvConf, "resolv-conf", "/etc/resolv.conf", "the resolver file replaced in resolv.conf mode (tests)")
	_ = f.MarkHidden("resolv-conf")
	return cmd
}

func newKillSwitchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "kill-switch off",
		Short: "Remove the blocking routes `up --kill-switch` left (IPv4 leaves outside the tunnel again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "off" {
				return usageError{fmt.Errorf("kill-switch %q: only \"off\"", args[0])}
			}
			n, err := hostnet.ClearKillSwitch()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kill switch off (%d routes removed)\n", n)
			return nil
		},
	}
}

func newDownCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the running `dstm-client up` (its TUN device and routes are removed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := readStatus(g.stateDir)
			if err != nil {
				return downError{err}
			}
			p, err := os.FindProcess(st.PID)
			if err == nil {
				err = p.Signal(syscall.SIGTERM)
			}
			if err != nil {
				return downError{fmt.Errorf("no running client (pid %d): %w", st.PID, err)}
			}
			for range 50 { // up to 5 s for a clean teardown
				if _, err := readStatus(g.stateDir); err != nil {
					fmt.Fprintln(cmd.OutOrStdout(), "tunnel down")
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return fmt.Errorf("client (pid %d) did not stop within 5 s", st.PID)
		},
	}
}

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	var socket string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the tunnel: lease, transport, routes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := readStatus(g.stateDir)
			if err != nil && socket != "" {
				// Not ours to read (a service's state directory), or none: the service's socket.
				st, err = socketStatus(cmd.Context(), socket)
			}
			if err != nil {
				return downError{errors.New("no tunnel: dstm-client up is not running")}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(out, "state:      %s\ngateway:    %s\n", st.State, st.Gateway)
			if st.State == "up" {
				fmt.Fprintf(out, "identity:   %s\nlease:      %s (gateway %s)\ntransport:  %s\ndevice:     %s\nroutes:     %v\ndns:        %v\ndomains:    %v\nup since:   %s\n",
					st.Identity, st.Lease, st.Server, st.Transport, st.Device, st.Routes, st.DNS, st.Domains, st.Since.Format(time.RFC3339))
				if len(st.Proxy) > 0 {
					fmt.Fprintf(out, "proxy:      %s (rootless: no device, no routes)\n", strings.Join(st.Proxy, ", "))
				}
			}
			if st.Error != "" {
				fmt.Fprintf(out, "last error: %s\n", st.Error)
			}
			if st.State != "up" {
				return downError{errors.New("tunnel is " + st.State)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&socket, "status-socket", defaultStatusSocket(), "where a client run as a service serves its status (read when the state directory has none)")
	return cmd
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "dstm-client", version.Version) },
	}
}

// withPort adds the TSP port to a gateway given without one ("gw.example", "2001:db8::1",
// "[2001:db8::1]").
func withPort(gw string) string {
	if _, _, err := net.SplitHostPort(gw); err == nil {
		return gw
	}
	h := gw
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	return net.JoinHostPort(h, client.DefaultPort)
}

func writeStatus(dir string, s client.Status) {
	s.PID = os.Getpid()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return
	}
	tmp := filepath.Join(dir, statusFile+".tmp")
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, filepath.Join(dir, statusFile))
	}
}

func readStatus(dir string) (client.Status, error) {
	var s client.Status
	b, err := os.ReadFile(filepath.Join(dir, statusFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, errors.New("no tunnel: dstm-client up is not running")
	}
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}
