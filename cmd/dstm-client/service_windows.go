//go:build windows

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

func newServiceManager() serviceManager { return windowsService{} }

// windowsService registers the client with the service manager: it starts
// `dstm-client service run <up arguments>`, which runs up until the manager stops it.
type windowsService struct{}

func (windowsService) install(exe string, args []string) (string, error) {
	m, err := mgr.Connect()
	if err != nil {
		return "", fmt.Errorf("service install: the service manager (run as an administrator): %w", err)
	}
	defer m.Disconnect()
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName: "DSTM client", Description: "IPv4 through the company's DSTM gateway",
		StartType: mgr.StartAutomatic,
	}, append([]string{"service", "run"}, args...)...)
	if err != nil {
		return "", fmt.Errorf("service install: %w", err)
	}
	defer s.Close()
	if err := s.Start(); err != nil {
		return "", fmt.Errorf("service install: start: %w", err)
	}
	return "Windows service " + serviceName, nil
}

func (windowsService) uninstall() error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service uninstall: the service manager (run as an administrator): %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return fmt.Errorf("service uninstall: %s is not installed: %w", serviceName, err)
	}
	defer s.Close()
	if st, err := s.Control(svc.Stop); err == nil {
		for deadline := time.Now().Add(30 * time.Second); st.State != svc.Stopped && time.Now().Before(deadline); {
			time.Sleep(300 * time.Millisecond)
			if st, err = s.Query(); err != nil {
				break
			}
		}
	}
	return s.Delete()
}

// serviceRunCmd is what the service manager starts: up, stopped by the manager.
func serviceRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "run [global flags] up [up flags]",
		Short:              "The service's entry point (started by the Windows service manager)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return svc.Run(serviceName, &windowsHandler{args: args})
		},
	}
}

// windowsHandler runs the client's root command with the service's arguments until Stop or
// Shutdown.
type windowsHandler struct{ args []string }

func (h *windowsHandler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs(h.args)
		done <- root.ExecuteContext(ctx)
	}()
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for {
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintf(os.Stderr, "dstm-client: %v\n", err)
				return true, 1
			}
			return false, 0
		case r := <-req:
			switch r.Cmd {
			case svc.Interrogate:
				status <- r.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending}
				cancel()
				<-done
				return false, 0
			}
		}
	}
}
