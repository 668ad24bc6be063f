package console

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
)

// device is one enrolled device of the viewer's: a chain of certificates, the first from its
// enrollment, each next one a renewal of the one before (made by the device itself). The
// embedded Certificate is the newest.
type device struct {
	certs.Certificate
	Enrolled time.Time           // the first certificate's start
	Older    []certs.Certificate // the chain's earlier certificates, newest first
	Status   string              // valid, expired, revoked …
	LastSeen string
	Session  *admin.Session    // the live session of any certificate of the chain
	Fields   map[string]string // the session's display values, if any
}

// chain returns the device's certificates, newest first.
func (d device) chain() []certs.Certificate {
	return append([]certs.Certificate{d.Certificate}, d.Older...)
}

// devicesOf lists identity's devices (newest first) with their sightings and sessions.
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
	for _, chain := range chains(cs) {
		c := chain[0]
		d := device{Certificate: c, Older: chain[1:], Enrolled: chain[len(chain)-1].NotBefore, Status: "valid", LastSeen: "—"}
		switch {
		case c.Revoked:
			d.Status = "revoked " + formatTime(c.RevokedAt)
		case !now.Before(c.NotAfter):
			d.Status = "expired"
		}
		// Each certificate was issued over the device's own connection (enrollment, renewal):
		// seen then at least; and at the end of the chain's last session.
		var seen time.Time
		for _, cc := range chain {
			if cc.NotBefore.After(seen) {
				seen = cc.NotBefore
			}
			if t, ok := s.cfg.Backend.LastSeen(cc.Serial); ok && t.After(seen) {
				seen = t
			}
			if ss, ok := bySerial[cc.Serial]; ok && d.Session == nil {
				d.Session = &ss
				d.Fields = sessionFields(ss, rate{}, now)
			}
		}
		switch {
		case d.Session != nil:
			d.LastSeen = "connected now"
		case !seen.IsZero():
			d.LastSeen = formatTime(seen)
		}
		out = append(out, d)
	}
	return out, nil
}

// chains groups certificates (newest first) into renewal chains, each newest first: a
// certificate no other renewed heads a chain, which follows RenewalOf back.
func chains(cs []certs.Certificate) [][]certs.Certificate {
	bySerial := make(map[string]certs.Certificate, len(cs))
	renewed := map[string]bool{}
	for _, c := range cs {
		bySerial[c.Serial] = c
		if c.RenewalOf != "" {
			renewed[c.RenewalOf] = true
		}
	}
	var out [][]certs.Certificate
	for _, c := range cs {
		if renewed[c.Serial] {
			continue
		}
		chain := []certs.Certificate{c}
		seen := map[string]bool{c.Serial: true}
		for prev, ok := bySerial[c.RenewalOf]; ok && !seen[prev.Serial]; prev, ok = bySerial[prev.RenewalOf] {
			seen[prev.Serial] = true
			chain = append(chain, prev)
		}
		out = append(out, chain)
	}
	return out
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

// deviceOf returns the viewer's device that holds certificate serial; errNotYours if the
// certificate is not the viewer's.
func (s *Server) deviceOf(ctx context.Context, v viewer, serial string) (device, error) {
	c, err := s.ownCertificate(ctx, v, serial)
	if err != nil {
		return device{}, err
	}
	ds, err := s.devicesOf(ctx, v.Identity)
	if err != nil {
		return device{}, err
	}
	for _, d := range ds {
		for _, cc := range d.chain() {
			if cc.Serial == c.Serial {
				return d, nil
			}
		}
	}
	return device{}, errNotYours
}

// revocable returns the certificates of d that the gateway still accepts.
func (s *Server) revocable(d device) []certs.Certificate {
	now := s.now()
	var out []certs.Certificate
	for _, c := range d.chain() {
		if !c.Revoked && now.Before(c.NotAfter) {
			out = append(out, c)
		}
	}
	return out
}

func (s *Server) selfRevokeConfirm(w http.ResponseWriter, r *http.Request, v viewer) {
	serial := r.URL.Query().Get("serial")
	d, err := s.deviceOf(r.Context(), v, serial)
	switch {
	case errors.Is(err, errNotYours):
		s.fail(w, r, v, http.StatusNotFound, "You have no certificate "+strconv.Quote(serial)+".")
	case err != nil:
		s.backendError(w, r, v, "Reading your devices", err)
	case len(s.revocable(d)) == 0:
		s.fail(w, r, v, http.StatusConflict, "The certificates of this device are revoked or expired already.")
	default:
		s.render(w, http.StatusOK, "selfrevoke", v, "Revoke a device", "me", struct {
			device
			Revocable []certs.Certificate
		}{d, s.revocable(d)})
	}
}

// selfRevoke revokes one of the viewer's devices: every certificate of its chain that the
// gateway still accepts (a renewal leaves the previous one valid until it expires); its
// session closes at once.
func (s *Server) selfRevoke(w http.ResponseWriter, r *http.Request, v viewer) {
	serial := r.PostFormValue("serial")
	d, err := s.deviceOf(r.Context(), v, serial)
	if errors.Is(err, errNotYours) {
		owner, _ := s.cfg.Backend.Certificate(r.Context(), serial)
		s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Str("serial", serial).Str("target", owner.Identity).
			Str("reason", "not the user's certificate").Msg("console: revocation refused")
		s.fail(w, r, v, http.StatusForbidden, "You can only revoke your own devices; certificate "+strconv.Quote(serial)+" is not one of theirs.")
		return
	}
	if err != nil {
		s.backendError(w, r, v, "Reading your devices", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	var serials []string
	closed := 0
	for _, c := range s.revocable(d) {
		res, err := s.cfg.Backend.Revoke(ctx, c.Serial)
		if err != nil {
			if len(serials) > 0 {
				s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Strs("serials", serials).
					Int("sessions_closed", closed).Msg("console: own device revoked in part")
			}
			s.backendError(w, r, v, "Revoking certificate "+c.Serial, err)
			return
		}
		serials, closed = append(serials, res.Serials...), closed+res.Sessions
	}
	if len(serials) == 0 {
		s.fail(w, r, v, http.StatusConflict, "The certificates of this device are revoked or expired already.")
		return
	}
	s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Str("serial", d.Serial).Strs("serials", serials).
		Int("sessions_closed", closed).Msg("console: own device revoked")
	s.render(w, http.StatusOK, "done", v, "Device revoked", "me", done{
		Text: "Certificate " + d.Serial + " is revoked (" + strconv.Itoa(len(serials)) + " certificate(s) of the device): the gateway refuses it from now on; " +
			strconv.Itoa(closed) + " session(s) closed. Enroll the device again to use it.", List: serials, Back: "/me"})
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
