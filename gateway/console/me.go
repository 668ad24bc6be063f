package console

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
)

// device is one certificate of the viewer's, with its sighting and live session.
type device struct {
	certs.Certificate
	Status   string // valid, expired, revoked
	LastSeen string
	Session  *admin.Session
	Fields   map[string]string // the session's display values, if any
}

// devicesOf lists the certificates issued to identity, with their sightings and sessions.
func (s *Server) devicesOf(ctx context.Context, identity string) ([]device, error) {
	ctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	cs, err := s.cfg.Backend.Certificates(ctx, identity)
	if err != nil {
		return nil, err
	}
	sessions, err := s.cfg.Backend.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	bySerial := map[string]admin.Session{}
	for _, ss := range sessions {
		if ss.Serial != "" && ss.Identity == identity {
			bySerial[ss.Serial] = ss
		}
	}
	out := make([]device, 0, len(cs))
	for _, c := range cs {
		d := device{Certificate: c, Status: "valid", LastSeen: "—"}
		switch {
		case c.Revoked:
			d.Status = "revoked " + formatTime(c.RevokedAt)
		case !now.Before(c.NotAfter):
			d.Status = "expired"
		}
		// Issued (or renewed) over the device's own connection: seen then at least.
		seen := c.NotBefore
		if t, ok := s.cfg.Backend.LastSeen(c.Serial); ok && t.After(seen) {
			seen = t
		}
		if !seen.IsZero() {
			d.LastSeen = formatTime(seen)
		}
		if ss, ok := bySerial[c.Serial]; ok {
			d.Session, d.LastSeen = &ss, "connected now"
			d.Fields = sessionFields(ss, rate{}, now)
		}
		out = append(out, d)
	}
	return out, nil
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request, v viewer) {
	ds, err := s.devicesOf(r.Context(), v.Identity)
	if err != nil {
		s.backendError(w, r, v, "Reading your devices", err)
		return
	}
	s.render(w, http.StatusOK, "devices", v, "My devices", "me", ds)
}

// ownCertificate returns the viewer's certificate serial; errNotYours if the CA issued it
// to someone else (or not at all: the same answer, so that serials cannot be probed).
func (s *Server) ownCertificate(ctx context.Context, v viewer, serial string) (certs.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	c, err := s.cfg.Backend.Certificate(ctx, serial)
	if errors.Is(err, admin.ErrNotFound) || errors.Is(err, admin.ErrInvalid) || (err == nil && c.Identity != v.Identity) {
		return c, errNotYours
	}
	return c, err
}

var errNotYours = errors.New("not a certificate of the viewer's")

func (s *Server) selfRevokeConfirm(w http.ResponseWriter, r *http.Request, v viewer) {
	serial := r.URL.Query().Get("serial")
	c, err := s.ownCertificate(r.Context(), v, serial)
	switch {
	case errors.Is(err, errNotYours):
		s.fail(w, r, v, http.StatusNotFound, "You have no certificate "+strconv.Quote(serial)+".")
	case err != nil:
		s.backendError(w, r, v, "Reading certificate "+serial, err)
	case c.Revoked:
		s.fail(w, r, v, http.StatusConflict, "Certificate "+c.Serial+" is revoked already.")
	default:
		ds, err := s.devicesOf(r.Context(), v.Identity)
		if err != nil {
			s.backendError(w, r, v, "Reading your devices", err)
			return
		}
		for _, d := range ds {
			if d.Serial == c.Serial {
				s.render(w, http.StatusOK, "selfrevoke", v, "Revoke a device", "me", d)
				return
			}
		}
		s.fail(w, r, v, http.StatusNotFound, "You have no certificate "+strconv.Quote(serial)+".")
	}
}

// selfRevoke revokes one of the viewer's own certificates; its session closes at once.
func (s *Server) selfRevoke(w http.ResponseWriter, r *http.Request, v viewer) {
	serial := r.PostFormValue("serial")
	c, err := s.ownCertificate(r.Context(), v, serial)
	if errors.Is(err, errNotYours) {
		s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Str("serial", serial).Str("target", c.Identity).
			Str("reason", "not the user's certificate").Msg("console: revocation refused")
		s.fail(w, r, v, http.StatusForbidden, "You can only revoke your own certificates; "+strconv.Quote(serial)+" is not one of them.")
		return
	}
	if err != nil {
		s.backendError(w, r, v, "Reading certificate "+serial, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	res, err := s.cfg.Backend.Revoke(ctx, c.Serial)
	if err != nil {
		s.backendError(w, r, v, "Revoking certificate "+c.Serial, err)
		return
	}
	s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Str("serial", c.Serial).
		Int("sessions_closed", res.Sessions).Msg("console: own certificate revoked")
	s.render(w, http.StatusOK, "done", v, "Device revoked", "me", done{
		Text: "Certificate " + c.Serial + " is revoked: the gateway refuses it from now on; " + strconv.Itoa(res.Sessions) +
			" session(s) closed. Enroll the device again to use it.", Back: "/me"})
}

// clientFile is dstm-client.yaml: what `dstm-client enroll --config FILE` reads.
type clientFile struct {
	Gateway     string `yaml:"gateway"`
	Fingerprint string `yaml:"fingerprint"`
	SSO         bool   `yaml:"sso"`
}

// clientConfig downloads dstm-client.yaml for this gateway.
func (s *Server) clientConfig(w http.ResponseWriter, _ *http.Request, v viewer) {
	b, err := yaml.Marshal(clientFile{Gateway: s.cfg.Gateway, Fingerprint: s.cfg.Fingerprint, SSO: true})
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.log.Info().Str("identity", v.Identity).Str("method", v.Method).Msg("console: client configuration downloaded")
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Content-Disposition", `attachment; filename="dstm-client.yaml"`)
	_, _ = w.Write(b)
}
