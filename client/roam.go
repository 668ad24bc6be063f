package client

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/dstmgw/dstm/tunnel/dtls"
)

// roamInterval is how often the client checks which local IPv6 address reaches the gateway;
// where the system reports address changes (Linux), it also checks on each one.
const roamInterval = 2 * time.Second

// roam follows the local address that routes to the gateway: when it changes, the DTLS socket
// is rebound to it (the session and its connection ID stay; the gateway learns the address
// from the next record) and maintain resumes the control session from the new address.
func (c *Client) roam(ctx context.Context, link *dtls.ClientLink, rc *dtls.RebindConn, server netip.AddrPort, roamed chan<- struct{}) {
	t := time.NewTicker(roamInterval)
	defer t.Stop()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := addrChanges(actx, c.log) // nil where not reported: the ticker alone
	current := localFor(server)
	for {
		select {
		case <-ctx.Done():
			return
		case <-link.Done():
			return
		case <-t.C:
		case <-changed:
		}
		now := localFor(server)
		if !now.IsValid() || now == current {
			continue
		}
		uc, err := listenUDP(now)
		if err != nil {
			c.log.Warn().Err(err).Str("client_v6", now.String()).Msg("roaming: cannot bind the new address")
			continue
		}
		if err := rc.Rebind(uc); err != nil {
			uc.Close()
			c.log.Warn().Err(err).Msg("roaming: rebind failed")
			continue
		}
		c.log.Info().Str("from", current.String()).Str("client_v6", now.String()).Msg("roamed to a new address; DTLS session kept")
		current = now
		// The TSP-SSL connection is bound to the old address: move the session to a new one.
		select {
		case roamed <- struct{}{}:
		default:
		}
	}
}

// localFor returns the local address the kernel would use to reach server (no packet is sent).
func localFor(server netip.AddrPort) netip.Addr {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return netip.Addr{}
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}
