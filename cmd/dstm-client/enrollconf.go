package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"go.yaml.in/yaml/v3"
)

// enrollFile is the client configuration the web console hands out
// (`dstm-client enroll --config dstm-client.yaml`).
type enrollFile struct {
	Gateway     string `yaml:"gateway"`
	Fingerprint string `yaml:"fingerprint"`
	SSO         bool   `yaml:"sso"`
}

func readEnrollFile(path string) (enrollFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return enrollFile{}, err
	}
	var f enrollFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return enrollFile{}, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case f.Gateway == "":
		return enrollFile{}, fmt.Errorf("%s: gateway: required", path)
	case f.Fingerprint == "":
		return enrollFile{}, fmt.Errorf("%s: fingerprint: required", path)
	}
	return f, nil
}

// openBrowser opens u with the desktop's handler for web addresses.
func openBrowser(ctx context.Context, u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.CommandContext(ctx, "open", u)
	case "windows":
		cmd = exec.CommandContext(ctx, "rundll32", "url.dll,FileProtocolHandler", u)
	default:
		if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
			return errors.New("no graphical session")
		}
		cmd = exec.CommandContext(ctx, "xdg-open", u)
	}
	return cmd.Start()
}
