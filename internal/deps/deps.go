// Package deps pins the project's module dependencies while packages are being written.
package deps

import (
	_ "github.com/pion/dtls/v3"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/rs/zerolog"
	_ "github.com/smallstep/certificates/authority"
	_ "github.com/smallstep/certificates/authority/config"
	_ "github.com/smallstep/certificates/authority/provisioner"
	_ "github.com/smallstep/certificates/db"
	_ "github.com/smallstep/cli-utils/token"
	_ "github.com/smallstep/cli-utils/token/provision"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/bbolt"
	_ "go.step.sm/crypto/jose"
	_ "go.step.sm/crypto/minica"
	_ "go.step.sm/crypto/pemutil"
	_ "go.step.sm/crypto/x509util"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/net/ipv4"
	_ "golang.org/x/net/ipv6"
	_ "golang.org/x/sys/unix"
	_ "golang.zx2c4.com/wireguard/tun"
)
