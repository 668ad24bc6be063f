// Command testop runs package oidctest's OpenID provider as its own process,
// for the end-to-end tests that put it in a network namespace.
//
//	testop -listen ADDR -host HOST -users FILE -ca-out FILE [-client ID[:SECRET[:REDIRECT]]]...
//
// FILE is a JSON list of oidctest.User; SIGHUP reads it again (users added,
// changed or removed). The provider's CA certificate is written to -ca-out
// before "ready ISSUER" is printed on stdout.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dstmgw/dstm/internal/oidctest"
)

type clientList []oidctest.Client

func (c *clientList) String() string { return fmt.Sprint(*c) }

func (c *clientList) Set(s string) error {
	parts := strings.SplitN(s, ":", 3)
	cl := oidctest.Client{ID: parts[0]}
	if len(parts) > 1 {
		cl.Secret = parts[1]
	}
	if len(parts) > 2 {
		cl.RedirectURIs = strings.Split(parts[2], ",")
	}
	*c = append(*c, cl)
	return nil
}

func readUsers(path string) ([]oidctest.User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var users []oidctest.User
	if err := json.Unmarshal(b, &users); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return users, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	host := flag.String("host", "127.0.0.1", "issuer host (name or address clients use)")
	usersFile := flag.String("users", "", "JSON list of users")
	caOut := flag.String("ca-out", "", "write the provider's CA certificate (PEM) here")
	var clients clientList
	flag.Var(&clients, "client", "client ID[:SECRET[:REDIRECT,...]] (repeatable)")
	flag.Parse()
	if err := run(*listen, *host, *usersFile, *caOut, clients); err != nil {
		fmt.Fprintln(os.Stderr, "testop:", err)
		os.Exit(1)
	}
}

func run(listen, host, usersFile, caOut string, clients []oidctest.Client) error {
	users, err := readUsers(usersFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	p, err := oidctest.Start(ln, host, clients, users)
	if err != nil {
		return err
	}
	defer p.Close()
	if caOut != "" {
		if err := os.WriteFile(caOut, p.CAPEM, 0o644); err != nil {
			return err
		}
	}
	fmt.Println("ready", p.Issuer)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for s := range sig {
		if s != syscall.SIGHUP {
			return nil
		}
		next, err := readUsers(usersFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testop: reload:", err)
			continue
		}
		p.ReplaceUsers(next)
		fmt.Println("reloaded", len(next))
	}
	return nil
}
