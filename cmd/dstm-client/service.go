package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// serviceName is the client's name in systemd, launchd and the Windows service manager.
const serviceName = "dstm-client"

// launchdLabel is its launchd label.
const launchdLabel = "com.dstmgw.dstm-client"

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service install [up flags] | service uninstall",
		Short: "Run the client as a system service: systemd (Linux), launchd (macOS), the service manager (Windows)",
	}
	install := &cobra.Command{
		Use:   "install --gateway HOST[:PORT] [other up flags]",
		Short: "Install and start the service, running `up` with these flags; its status is served to every local user",
		// The flags are up's: checked by up's own flag set, then written into the service.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				if a == "-h" || a == "--help" {
					return cmd.Help()
				}
			}
			upArgs, err := serviceArgs(g, args)
			if err != nil {
				return usageError{err}
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if exe, err = filepath.EvalSymlinks(exe); err != nil {
				return err
			}
			where, err := newServiceManager().install(exe, upArgs)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Service %s installed (%s) and started: %s %s\n`dstm-client status` shows the tunnel to every user.\n",
				serviceName, where, exe, strings.Join(upArgs, " "))
			return nil
		},
	}
	uninstall := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove the service (the tunnel's device and routes go with it)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := newServiceManager().uninstall(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Service %s stopped and removed\n", serviceName)
			return nil
		},
	}
	cmd.AddCommand(install, uninstall)
	if run := serviceRunCmd(g); run != nil {
		cmd.AddCommand(run)
	}
	return cmd
}

// serviceArgs are the arguments the service runs the client with: the global flags, up
// and its flags (checked here with up's own flag set), and the status socket.
func serviceArgs(g *globals, args []string) ([]string, error) {
	up := newUpCmd(g)
	if err := up.ParseFlags(args); err != nil {
		return nil, fmt.Errorf("service install: %w", err)
	}
	if rest := up.Flags().Args(); len(rest) > 0 {
		return nil, fmt.Errorf("service install: unexpected arguments %q", rest)
	}
	if gw, _ := up.Flags().GetStringSlice("gateway"); len(gw) == 0 {
		return nil, errors.New("service install: --gateway is required")
	}
	if !filepath.IsAbs(g.stateDir) {
		return nil, fmt.Errorf("service install: --state-dir %q must be an absolute path", g.stateDir)
	}
	out := []string{"--state-dir", g.stateDir, "--log-level", g.logLevel, "up"}
	out = append(out, args...)
	if !up.Flags().Changed("status-socket") {
		out = append(out, "--status-socket", defaultStatusSocket())
	}
	return out, nil
}

// serviceManager installs and removes the service on one platform.
type serviceManager interface {
	install(exe string, args []string) (where string, err error)
	uninstall() error
}

// runner runs a system tool; a failure carries its output.
type runner func(name string, args ...string) error

// systemd installs a unit in dir (/etc/systemd/system) and drives systemctl.
type systemd struct {
	dir string
	run runner
}

func (s systemd) unitPath() string { return filepath.Join(s.dir, serviceName+".service") }

func (s systemd) install(exe string, args []string) (string, error) {
	if err := os.WriteFile(s.unitPath(), []byte(systemdUnit(exe, args)), 0o644); err != nil {
		return "", fmt.Errorf("service install: %w", err)
	}
	if err := s.run("systemctl", "daemon-reload"); err != nil {
		return "", err
	}
	if err := s.run("systemctl", "enable", "--now", serviceName+".service"); err != nil {
		return "", err
	}
	return s.unitPath(), nil
}

func (s systemd) uninstall() error {
	if _, err := os.Stat(s.unitPath()); err != nil {
		return fmt.Errorf("service uninstall: %s is not installed: %w", serviceName, err)
	}
	if err := s.run("systemctl", "disable", "--now", serviceName+".service"); err != nil {
		return err
	}
	if err := os.Remove(s.unitPath()); err != nil {
		return err
	}
	return s.run("systemctl", "daemon-reload")
}

// systemdUnit is the unit file: restarted on failure, with only the privileges the tunnel
// needs (its device, routes and DNS).
func systemdUnit(exe string, args []string) string {
	var b strings.Builder
	b.WriteString("[Unit]\n")
	b.WriteString("Description=DSTM client: IPv4 through the company's DSTM gateway\n")
	b.WriteString("Documentation=https://github.com/dstmgw/dstm\n")
	b.WriteString("Wants=network-online.target\nAfter=network-online.target\n\n")
	b.WriteString("[Service]\n")
	b.WriteString("ExecStart=" + systemdQuote(exe))
	for _, a := range args {
		b.WriteString(" " + systemdQuote(a))
	}
	b.WriteString("\nRestart=on-failure\nRestartSec=5s\n")
	b.WriteString("CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE\n")
	b.WriteString("NoNewPrivileges=yes\nProtectHome=yes\nPrivateTmp=yes\n\n")
	b.WriteString("[Install]\nWantedBy=multi-user.target\n")
	return b.String()
}

// systemdQuote quotes an ExecStart word when it needs it (systemd.syntax: C-style escapes in
// double quotes; '%' and '$' are specifiers and variables, doubled).
func systemdQuote(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// launchd installs a daemon plist in dir (/Library/LaunchDaemons) and drives launchctl.
type launchd struct {
	dir string
	run runner
}

func (l launchd) plistPath() string { return filepath.Join(l.dir, launchdLabel+".plist") }

func (l launchd) install(exe string, args []string) (string, error) {
	if err := os.WriteFile(l.plistPath(), []byte(launchdPlist(exe, args)), 0o644); err != nil {
		return "", fmt.Errorf("service install: %w", err)
	}
	if err := l.run("launchctl", "bootstrap", "system", l.plistPath()); err != nil {
		return "", err
	}
	return l.plistPath(), nil
}

func (l launchd) uninstall() error {
	if _, err := os.Stat(l.plistPath()); err != nil {
		return fmt.Errorf("service uninstall: %s is not installed: %w", serviceName, err)
	}
	if err := l.run("launchctl", "bootout", "system/"+launchdLabel); err != nil {
		return err
	}
	return os.Remove(l.plistPath())
}

// launchdPlist is the daemon's property list: started at boot, restarted when it exits.
func launchdPlist(exe string, args []string) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString("<plist version=\"1.0\">\n<dict>\n")
	b.WriteString("\t<key>Label</key>\n\t<string>" + xmlText(launchdLabel) + "</string>\n")
	b.WriteString("\t<key>ProgramArguments</key>\n\t<array>\n")
	for _, a := range append([]string{exe}, args...) {
		b.WriteString("\t\t<string>" + xmlText(a) + "</string>\n")
	}
	b.WriteString("\t</array>\n")
	b.WriteString("\t<key>RunAtLoad</key>\n\t<true/>\n")
	b.WriteString("\t<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>\n")
	b.WriteString("\t<key>StandardErrorPath</key>\n\t<string>/var/log/dstm-client.log</string>\n")
	b.WriteString("</dict>\n</plist>\n")
	return b.String()
}

func xmlText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
