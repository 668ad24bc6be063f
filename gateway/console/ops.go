package console

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dstmgw/dstm/certs"
	"github.com/dstmgw/dstm/gateway/admin"
	"github.com/dstmgw/dstm/gateway/events"
)

// backendTimeout bounds one page's calls to the gateway.
const backendTimeout = 10 * time.Second

// eventsShown is how many events the events page lists.
const eventsShown = 500

// sessionRow is a session as the pages and the live JSON show it: Fields are the display
// values of the cells the script updates (data-field).
type sessionRow struct {
	admin.Session
	Fields map[string]string `json:"fields"`
}

// poolRow is a pool's usage.
type poolRow struct {
	admin.PoolStatus
	Used   uint64            `json:"used"`
	Fields map[string]string `json:"fields"`
}

// snapshot is what the live pages show at one moment.
type snapshot struct {
	Time     time.Time         `json:"time"`
	Stats    map[string]string `json:"stats"`
	Sessions []sessionRow      `json:"sessions"`
	Pools    []poolRow         `json:"pools"`
	Status   admin.Status      `json:"-"`
}

func sessionFields(ss admin.Session, r rate, now time.Time) map[string]string {
	f := map[string]string{
		"identity": ss.Identity, "lease": dash(ss.Lease), "transport": dash(ss.Transport), "endpoint": dash(ss.Endpoint),
		"uptime": "—", "bytes_in": formatBytes(ss.BytesIn), "bytes_out": formatBytes(ss.BytesOut),
		"rate_in": formatRate(r.In), "rate_out": formatRate(r.Out),
	}
	if !ss.Since.IsZero() {
		f["uptime"] = formatUptime(now.Sub(ss.Since))
	}
	return f
}

func poolFields(p admin.PoolStatus) (used uint64, f map[string]string) {
	used = p.Size - min(p.Free, p.Size)
	return used, map[string]string{
		"size": strconv.FormatUint(p.Size, 10), "used": strconv.FormatUint(used, 10),
		"offered": strconv.FormatUint(p.Offered, 10), "active": strconv.FormatUint(p.Active, 10),
		"held": strconv.FormatUint(p.Held, 10), "static": strconv.FormatUint(p.Static, 10),
		"free": strconv.FormatUint(p.Free, 10), "pct": formatPercent(used, p.Size),
	}
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// snapshot reads the sessions and the status once; throughput comes from the sampler.
func (s *Server) snapshot(ctx context.Context) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	sessions, err := s.cfg.Backend.Sessions(ctx)
	if err != nil {
		return snapshot{}, err
	}
	st, err := s.cfg.Backend.Status(ctx)
	if err != nil {
		return snapshot{}, err
	}
	now := s.now()
	rates := s.sampler.observe(now, sessions)
	snap := snapshot{Time: now, Status: st, Sessions: make([]sessionRow, 0, len(sessions))}
	for _, ss := range sessions {
		snap.Sessions = append(snap.Sessions, sessionRow{Session: ss, Fields: sessionFields(ss, rates[ss.ID], now)})
	}
	var used, size uint64
	for _, p := range st.Pools {
		u, f := poolFields(p)
		snap.Pools = append(snap.Pools, poolRow{PoolStatus: p, Used: u, Fields: f})
		used, size = used+u, size+p.Size
	}
	var in, out float64
	for _, r := range rates {
		in, out = in+r.In, out+r.Out
	}
	snap.Stats = map[string]string{
		"sessions": strconv.Itoa(len(sessions)), "leases_used": strconv.FormatUint(used, 10),
		"leases_size": strconv.FormatUint(size, 10), "leases_pct": formatPercent(used, size),
		"rate_in": formatRate(in), "rate_out": formatRate(out),
	}
	return snap, nil
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, v viewer) {
	snap, err := s.snapshot(r.Context())
	if err != nil {
		s.backendError(w, r, v, "Reading the gateway's state", err)
		return
	}
	data := struct {
		snapshot
		Uptime string
		Events []events.Event
	}{snapshot: snap, Uptime: formatUptime(snap.Time.Sub(snap.Status.Started)), Events: s.cfg.Backend.Events(10)}
	s.render(w, http.StatusOK, "overview", v, "Overview", "overview", data)
}

func (s *Server) sessionsPage(w http.ResponseWriter, r *http.Request, v viewer) {
	snap, err := s.snapshot(r.Context())
	if err != nil {
		s.backendError(w, r, v, "Reading the sessions", err)
		return
	}
	s.render(w, http.StatusOK, "sessions", v, "Sessions", "sessions", snap)
}

// live is the JSON the script polls.
func (s *Server) live(w http.ResponseWriter, r *http.Request, _ viewer) {
	snap, err := s.snapshot(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, snap)
}

// poolLeases is a pool with its leases.
type poolLeases struct {
	poolRow
	Leases []admin.Lease
}

func (s *Server) leasesPage(w http.ResponseWriter, r *http.Request, v viewer) {
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	st, err := s.cfg.Backend.Status(ctx)
	if err != nil {
		s.backendError(w, r, v, "Reading the pools", err)
		return
	}
	leases, err := s.cfg.Backend.Leases(ctx)
	if err != nil {
		s.backendError(w, r, v, "Reading the leases", err)
		return
	}
	var pools []poolLeases
	idx := map[string]int{}
	for _, p := range st.Pools {
		u, f := poolFields(p)
		idx[p.Name] = len(pools)
		pools = append(pools, poolLeases{poolRow: poolRow{PoolStatus: p, Used: u, Fields: f}})
	}
	var other []admin.Lease // of pools no longer configured
	for _, l := range leases {
		if i, ok := idx[l.Pool]; ok {
			pools[i].Leases = append(pools[i].Leases, l)
		} else {
			other = append(other, l)
		}
	}
	s.render(w, http.StatusOK, "leases", v, "Leases", "leases", struct {
		Pools []poolLeases
		Other []admin.Lease
	}{pools, other})
}

func (s *Server) eventsPage(w http.ResponseWriter, r *http.Request, v viewer) {
	kind := events.Kind(r.URL.Query().Get("kind"))
	if kind != "" && !slices.Contains(events.Kinds, kind) {
		kind = ""
	}
	evs := s.cfg.Backend.Events(0)
	if kind != "" {
		evs = slices.DeleteFunc(evs, func(e events.Event) bool { return e.Kind != kind })
	}
	if len(evs) > eventsShown {
		evs = evs[:eventsShown]
	}
	s.render(w, http.StatusOK, "events", v, "Events", "events", struct {
		Kind   events.Kind
		Kinds  []events.Kind
		Events []events.Event
	}{kind, events.Kinds, evs})
}

// findSession returns the live session id.
func (s *Server) findSession(ctx context.Context, id string) (admin.Session, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	all, err := s.cfg.Backend.Sessions(ctx)
	if err != nil {
		return admin.Session{}, false, err
	}
	for _, ss := range all {
		if ss.ID == id {
			return ss, true, nil
		}
	}
	return admin.Session{}, false, nil
}

func (s *Server) kickConfirm(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.URL.Query().Get("session")
	ss, ok, err := s.findSession(r.Context(), id)
	switch {
	case err != nil:
		s.backendError(w, r, v, "Reading the sessions", err)
	case !ok:
		s.fail(w, r, v, http.StatusNotFound, "No live session "+strconv.Quote(id)+": it may have ended already.")
	default:
		s.render(w, http.StatusOK, "kick", v, "Kick a session", "sessions", sessionRow{Session: ss, Fields: sessionFields(ss, rate{}, s.now())})
	}
}

func (s *Server) kick(w http.ResponseWriter, r *http.Request, v viewer) {
	id := r.PostFormValue("session")
	ss, _, _ := s.findSession(r.Context(), id) // for the log line; Kick decides
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	if err := s.cfg.Backend.Kick(ctx, id); err != nil {
		s.backendError(w, r, v, "Kicking session "+id, err)
		return
	}
	s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Str("session", id).Str("target", ss.Identity).
		Str("lease_v4", ss.Lease).Msg("console: session kicked")
	s.render(w, http.StatusOK, "done", v, "Session kicked", "sessions", done{
		Text: "Session " + id + " of " + dash(ss.Identity) + " was closed; its address is held for the identity.", Back: "/ops/sessions"})
}

// done is a result page.
type done struct {
	Text string
	List []string
	Back string
}

// revokeTarget is an identity to revoke, with what it affects.
type revokeTarget struct {
	Identity     string
	Certificates []certs.Certificate // unrevoked and unexpired
	Sessions     []admin.Session
}

// identityParam validates an identity typed by the operator; one that reads as a serial
// is refused (the revocation would take it for one).
func identityParam(s string) (string, bool) {
	id, err := certs.NormalizeIdentity(strings.TrimSpace(s))
	if err != nil {
		return "", false
	}
	if _, err := certs.ParseSerial(id); err == nil {
		return "", false
	}
	return id, true
}

func (s *Server) revokeConfirm(w http.ResponseWriter, r *http.Request, v viewer) {
	id, ok := identityParam(r.URL.Query().Get("identity"))
	if !ok {
		s.fail(w, r, v, http.StatusBadRequest, "That is not an identity (an e-mail address or a DNS name).")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	cs, err := s.cfg.Backend.Certificates(ctx, id)
	if err != nil {
		s.backendError(w, r, v, "Reading the certificates of "+id, err)
		return
	}
	sessions, err := s.cfg.Backend.Sessions(ctx)
	if err != nil {
		s.backendError(w, r, v, "Reading the sessions", err)
		return
	}
	t := revokeTarget{Identity: id}
	now := s.now()
	for _, c := range cs {
		if !c.Revoked && now.Before(c.NotAfter) {
			t.Certificates = append(t.Certificates, c)
		}
	}
	for _, ss := range sessions {
		if ss.Identity == id {
			t.Sessions = append(t.Sessions, ss)
		}
	}
	s.render(w, http.StatusOK, "revoke", v, "Revoke an identity", "sessions", t)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request, v viewer) {
	id, ok := identityParam(r.PostFormValue("identity"))
	if !ok {
		s.fail(w, r, v, http.StatusBadRequest, "That is not an identity (an e-mail address or a DNS name).")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	res, err := s.cfg.Backend.Revoke(ctx, id)
	if err != nil {
		s.backendError(w, r, v, "Revoking "+id, err)
		return
	}
	s.log.Warn().Str("identity", v.Identity).Str("method", v.Method).Str("target", id).Strs("serials", res.Serials).
		Int("sessions_closed", res.Sessions).Msg("console: identity revoked")
	text := id + ": " + strconv.Itoa(len(res.Serials)) + " certificate(s) revoked, " + strconv.Itoa(res.Sessions) + " session(s) closed."
	s.render(w, http.StatusOK, "done", v, "Identity revoked", "sessions", done{Text: text, List: res.Serials, Back: "/ops/sessions"})
}

// tokenRequest is the token form's content.
type tokenRequest struct {
	Identity string
	TTL      time.Duration
	TTLText  string
}

// maxTokenTTL is the longest token the console issues (ca.token_ttl's bound).
const maxTokenTTL = 7 * 24 * time.Hour

func tokenParams(identity, ttl string) (tokenRequest, string) {
	id, ok := identityParam(identity)
	if !ok {
		return tokenRequest{}, "That is not an identity (an e-mail address or a DNS name)."
	}
	t := tokenRequest{Identity: id}
	if ttl = strings.TrimSpace(ttl); ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil || d < time.Minute || d > maxTokenTTL {
			return tokenRequest{}, "The lifetime must be a duration from 1m to 168h, such as 30m or 24h."
		}
		t.TTL, t.TTLText = d, d.String()
	}
	return t, ""
}

func (s *Server) tokenConfirm(w http.ResponseWriter, r *http.Request, v viewer) {
	q := r.URL.Query()
	if q.Get("identity") == "" {
		s.render(w, http.StatusOK, "token", v, "Issue an enrollment token", "sessions", nil)
		return
	}
	t, problem := tokenParams(q.Get("identity"), q.Get("ttl"))
	if problem != "" {
		s.fail(w, r, v, http.StatusBadRequest, problem)
		return
	}
	s.render(w, http.StatusOK, "token", v, "Issue an enrollment token", "sessions", &t)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request, v viewer) {
	t, problem := tokenParams(r.PostFormValue("identity"), r.PostFormValue("ttl"))
	if problem != "" {
		s.fail(w, r, v, http.StatusBadRequest, problem)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), backendTimeout)
	defer cancel()
	res, err := s.cfg.Backend.Token(ctx, t.Identity, t.TTL)
	if err != nil {
		s.backendError(w, r, v, "Issuing a token for "+t.Identity, err)
		return
	}
	s.log.Info().Str("identity", v.Identity).Str("method", v.Method).Str("target", t.Identity).
		Time("expires", res.Expires).Msg("console: enrollment token issued")
	s.render(w, http.StatusOK, "tokendone", v, "Enrollment token", "sessions", struct {
		admin.TokenResult
		Gateway string
	}{res, s.cfg.Gateway})
}
