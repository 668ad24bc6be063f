package gateway

import (
	"context"
	"errors"
	"slices"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/events"
)

// followRevocations closes the live sessions of every revoked certificate within moments of
// the revocation.
func (g *Gateway) followRevocations(ctx context.Context) error {
	ch, cancel := g.ca.Subscribe(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r, ok := <-ch:
			if !ok {
				return nil
			}
			g.events.Add(events.Event{Time: g.now(), Kind: events.Revoked, Identity: r.Identity, Serial: r.Serial})
			closed := g.ctl.CloseRevoked(ctx, "", r.Serial)
			g.log.Warn().Str("event", "revoked").Str("identity", r.Identity).Str("serial", r.Serial).
				Int("sessions_closed", len(closed)).Msg("certificate revoked")
		}
	}
}

// Revoke revokes one certificate (a serial this CA issued) or every certificate of an
// identity and closes the affected sessions. followRevocations often closes them first, so
// the count is of those live before the revocation and any CloseRevoked found after it.
func (g *Gateway) Revoke(ctx context.Context, target string) (admin.RevokeResult, error) {
	var res admin.RevokeResult
	serial, perr := certs.ParseSerial(target)
	err := errors.New("not a serial")
	var live []string
	if perr == nil {
		live = g.ctl.Matching("", serial)
		err = g.ca.Revoke(ctx, serial, "operator")
	}
	switch {
	case err == nil:
		res.Serials = []string{serial}
		res.Sessions = countUnion(live, g.ctl.CloseRevoked(ctx, "", serial))
	case perr == nil && !errors.Is(err, certs.ErrUnknownSerial):
		g.metrics.Revocation("error")
		return res, err
	default: // not a serial of ours: an identity
		live = g.ctl.Matching(target, "")
		serials, err := g.ca.RevokeIdentity(ctx, target)
		if err != nil {
			g.metrics.Revocation("error")
			return res, err
		}
		res.Serials = serials
		res.Sessions = countUnion(live, g.ctl.CloseRevoked(ctx, target, ""))
	}
	g.metrics.Revocation("ok")
	g.log.Warn().Str("event", "revoke").Str("target", target).Strs("serials", res.Serials).
		Int("sessions_closed", res.Sessions).Msg("revocation by the operator")
	return res, nil
}

func countUnion(a, b []string) int {
	n := len(a)
	for _, s := range b {
		if !slices.Contains(a, s) {
			n++
		}
	}
	return n
}
