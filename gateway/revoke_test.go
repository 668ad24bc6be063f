package gateway_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/config"
)

// TestRevokeIdentityCounts: an identity-wide revocation closes the identity's two sessions
// (two certificates: two revocation events, and the admin call's own close) and counts each
// once; another identity's session stays. A serial this CA never issued closes nothing.
func TestRevokeIdentityCounts(t *testing.T) {
	gw := startGateway(t, func(c *config.Config) { c.Leases.MaxSessions = 3 })
	ctx := testCtx(t)
	e1 := gw.enrollIdentity(t, "eve@example.com")
	e2 := gw.enrollIdentity(t, "eve@example.com")
	f := gw.enrollIdentity(t, "frank@example.com")
	t1 := openTLSTunnel(t, gw, e1)
	t2 := openTLSTunnel(t, gw, e2)
	tf := openTLSTunnel(t, gw, f)

	// A serial that is not ours (nor an identity).
	if res, err := gw.admin.Revoke(ctx, "0x7fffffffffffffffffff"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("revoking a serial this CA never issued answered %+v, %v; want not found", res, err)
	}

	res, err := gw.admin.Revoke(ctx, "eve@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if res.Sessions != 2 || len(res.Serials) != 2 {
		t.Errorf("revoking eve answered %+v, want two serials and two sessions", res)
	}
	for _, c := range []net.Conn{t1.c, t2.c} {
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Error("an eve session was not closed")
				}
				break
			}
		}
	}
	if l := gw.waitLeaseState(t, tf.lease, "active"); l.Identity != "frank@example.com" {
		t.Errorf("frank's lease: %+v", l)
	}
}
