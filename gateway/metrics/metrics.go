package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every gateway metric name.
const Namespace = "dstm"

// Values of the "transport" label of the handshake metrics.
const (
	TransportTSPTCP = "tsp-tcp" // plain TSP over TCP
	TransportTSPUDP = "tsp-udp" // plain TSP over "reliable UDP"
	TransportTSPTLS = "tsp-tls" // TSP-SSL (TSP in TLS)
	TransportDTLS   = "dtls"    // DTLS data-channel handshake
)

// Values of the "result" label of the handshake counter.
const (
	ResultOK      = "ok"      // handshake completed, session established
	ResultRefused = "refused" // peer authenticated or rejected by policy: a deliberate refusal
	ResultError   = "error"   // protocol, I/O or certificate error
	ResultTimeout = "timeout" // handshake deadline expired
)

// StatusOther is the "status" label value used by [Metrics.TSPStatus] for a
// code outside 100–999.
const StatusOther = "other"

// Metrics owns the gateway's private registry and its event metrics. Build
// one with [New]; a nil *Metrics is a no-op sink.
type Metrics struct {
	reg *prometheus.Registry

	handshakes        *prometheus.CounterVec
	handshakeDuration *prometheus.HistogramVec
	tspStatus         *prometheus.CounterVec
	enrollments       *prometheus.CounterVec
	renewals          *prometheus.CounterVec
	revocations       *prometheus.CounterVec
	consoleSignIns    *prometheus.CounterVec
	consoleRefused    *prometheus.CounterVec
	allocDuration     prometheus.Histogram

	state   *stateCollector
	handler http.Handler
}

// New builds the registry with every metric; the state metrics are absent
// until [Metrics.SetSources].
func New() *Metrics {
	m := &Metrics{
		reg:               prometheus.NewRegistry(),
		handshakes:        newCounterVec("handshakes_total", "TSP and DTLS handshakes by transport and result.", "transport", "result"),
		handshakeDuration: newHandshakeHistogram(),
		tspStatus:         newCounterVec("tsp_responses_total", "TSP status codes sent to clients, by code.", "status"),
		enrollments:       newCounterVec("enrollments_total", "Certificate enrollments (token + CSR) by result.", "result"),
		renewals:          newCounterVec("renewals_total", "Certificate renewals by result.", "result"),
		revocations:       newCounterVec("revocations_total", "Certificate revocations by result.", "result"),
		consoleSignIns:    newCounterVec("console_sign_ins_total", "Web console sign-ins by method (sso, certificate) and result.", "method", "result"),
		consoleRefused:    newCounterVec("console_requests_refused_total", "Web console requests refused, by reason.", "reason"),
		allocDuration:     newAllocationHistogram(),
		state:             newStateCollector(),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.handshakes, m.handshakeDuration, m.tspStatus,
		m.enrollments, m.renewals, m.revocations, m.consoleSignIns, m.consoleRefused,
		m.allocDuration, m.state,
	)
	m.initSeries()
	m.handler = m.newHandler()
	return m
}

func newCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
}

// newHandshakeHistogram covers a LAN handshake (a few ms) up to a slow WAN
// one with retransmissions (~20 s): 5 ms doubling 13 times.
func newHandshakeHistogram() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace,
		Name:      "handshake_duration_seconds",
		Help:      "Duration of successful TSP and DTLS handshakes, by transport.",
		Buckets:   prometheus.ExponentialBuckets(0.005, 2, 13),
	}, []string{"transport"})
}

// newAllocationHistogram covers 1 µs (an offer kept in memory) to 100 ms (a
// store commit under load) in 1–2.5–5 steps per decade.
func newAllocationHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace,
		Name:      "lease_allocation_duration_seconds",
		Help:      "Time to allocate a lease, store commit included.",
		Buckets: []float64{
			1e-6, 2.5e-6, 5e-6,
			1e-5, 2.5e-5, 5e-5,
			1e-4, 2.5e-4, 5e-4,
			1e-3, 2.5e-3, 5e-3,
			1e-2, 2.5e-2, 5e-2,
			1e-1,
		},
	})
}

// initSeries creates every known label combination at 0, so that rate() and
// absent() need no special cases.
func (m *Metrics) initSeries() {
	for _, t := range []string{TransportTSPTCP, TransportTSPUDP, TransportTSPTLS, TransportDTLS} {
		for _, r := range []string{ResultOK, ResultRefused, ResultError, ResultTimeout} {
			m.handshakes.WithLabelValues(t, r)
		}
		m.handshakeDuration.WithLabelValues(t)
	}
	for _, r := range []string{ResultOK, ResultRefused, ResultError} {
		m.enrollments.WithLabelValues(r)
		m.renewals.WithLabelValues(r)
		m.revocations.WithLabelValues(r)
		m.consoleSignIns.WithLabelValues("sso", r)
	}
	m.consoleSignIns.WithLabelValues("certificate", ResultOK)
	for _, r := range []string{"not_operator", "forged_form"} {
		m.consoleRefused.WithLabelValues(r)
	}
}

// Registry returns the private registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler returns the HTTP handler of the private registry. A collector's
// error does not fail the whole scrape. Every call returns the same handler,
// so the in-flight limit is shared.
func (m *Metrics) Handler() http.Handler { return m.handler }

func (m *Metrics) newHandler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:            m.reg,
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
		Timeout:             scrapeTimeout,
	})
	return promhttp.InstrumentMetricHandler(m.reg, h)
}

// ObserveHandshake counts one handshake and records the duration of a
// successful one.
func (m *Metrics) ObserveHandshake(transport, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.handshakes.WithLabelValues(transport, result).Inc()
	if result == ResultOK {
		m.handshakeDuration.WithLabelValues(transport).Observe(d.Seconds())
	}
}

// TSPStatus counts one TSP status code sent to a client. Codes outside
// 100–999 are counted as [StatusOther].
func (m *Metrics) TSPStatus(code int) {
	if m == nil {
		return
	}
	m.tspStatus.WithLabelValues(statusLabel(code)).Inc()
}

func statusLabel(code int) string {
	if code < 100 || code > 999 {
		return StatusOther
	}
	return strconv.Itoa(code)
}

// ObserveAllocation records the duration of one lease allocation.
func (m *Metrics) ObserveAllocation(d time.Duration) {
	if m == nil {
		return
	}
	m.allocDuration.Observe(d.Seconds())
}

// Enrollment counts one certificate enrollment (ok, refused or error).
func (m *Metrics) Enrollment(result string) {
	if m == nil {
		return
	}
	m.enrollments.WithLabelValues(result).Inc()
}

// Renewal counts one certificate renewal (ok, refused or error).
func (m *Metrics) Renewal(result string) {
	if m == nil {
		return
	}
	m.renewals.WithLabelValues(result).Inc()
}

// Revocation counts one revocation request (ok, refused or error).
func (m *Metrics) Revocation(result string) {
	if m == nil {
		return
	}
	m.revocations.WithLabelValues(result).Inc()
}

// ConsoleSignIn counts one web console sign-in: method sso or certificate; result ok,
// refused (the person or the answer was not admitted) or error (the provider failed).
func (m *Metrics) ConsoleSignIn(method, result string) {
	if m == nil {
		return
	}
	m.consoleSignIns.WithLabelValues(method, result).Inc()
}

// ConsoleRefused counts one web console request refused: not_operator (a user on an operator
// page) or forged_form (a POST without the session's CSRF token or from another origin).
func (m *Metrics) ConsoleRefused(reason string) {
	if m == nil {
		return
	}
	m.consoleRefused.WithLabelValues(reason).Inc()
}

// SetCluster installs the cluster source (cluster mode); without it dstm_cluster_owner is
// absent.
func (m *Metrics) SetCluster(c ClusterStats) {
	if m == nil || c == nil {
		return
	}
	m.state.cluster.Store(&c)
}

// SetBGP installs the BGP source (with bgp:); without it the dstm_bgp_* gauges are absent.
func (m *Metrics) SetBGP(b BGPStats) {
	if m == nil || b == nil {
		return
	}
	m.state.bgp.Store(&b)
}

// SetSources installs the state sources read at scrape time; a nil source's
// metrics are absent. It is safe to call again during scrapes.
func (m *Metrics) SetSources(leases LeaseStats, sessions SessionStats, dp DataplaneStats) {
	if m == nil {
		return
	}
	m.state.set(&sources{leases: leases, sessions: sessions, dataplane: dp})
}
