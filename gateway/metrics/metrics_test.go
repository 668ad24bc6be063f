package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEventMetrics(t *testing.T) {
	tests := []struct {
		name   string
		apply  func(m *Metrics)
		metric string
		want   string
	}{
		{
			name: "tsp status codes",
			apply: func(m *Metrics) {
				m.TSPStatus(200)
				m.TSPStatus(200)
				m.TSPStatus(302)
				m.TSPStatus(-1)
				m.TSPStatus(1000)
			},
			metric: "dstm_tsp_responses_total",
			want: `# HELP dstm_tsp_responses_total TSP status codes sent to clients, by code.
# TYPE dstm_tsp_responses_total counter
dstm_tsp_responses_total{status="200"} 2
dstm_tsp_responses_total{status="302"} 1
dstm_tsp_responses_total{status="other"} 2
`,
		},
		{
			name: "enrollments",
			apply: func(m *Metrics) {
				m.Enrollment(ResultOK)
				m.Enrollment(ResultRefused)
				m.Enrollment(ResultRefused)
			},
			metric: "dstm_enrollments_total",
			want: `# HELP dstm_enrollments_total Certificate enrollments (token + CSR) by result.
# TYPE dstm_enrollments_total counter
dstm_enrollments_total{result="error"} 0
dstm_enrollments_total{result="ok"} 1
dstm_enrollments_total{result="refused"} 2
`,
		},
		{
			name:   "renewals",
			apply:  func(m *Metrics) { m.Renewal(ResultError) },
			metric: "dstm_renewals_total",
			want: `# HELP dstm_renewals_total Certificate renewals by result.
# TYPE dstm_renewals_total counter
dstm_renewals_total{result="error"} 1
dstm_renewals_total{result="ok"} 0
dstm_renewals_total{result="refused"} 0
`,
		},
		{
			name: "console sign-ins",
			apply: func(m *Metrics) {
				m.ConsoleSignIn("sso", ResultOK)
				m.ConsoleSignIn("sso", ResultRefused)
				m.ConsoleSignIn("certificate", ResultOK)
			},
			metric: "dstm_console_sign_ins_total",
			want: `# HELP dstm_console_sign_ins_total Web console sign-ins by method (sso, certificate) and result.
# TYPE dstm_console_sign_ins_total counter
dstm_console_sign_ins_total{method="certificate",result="ok"} 1
dstm_console_sign_ins_total{method="sso",result="error"} 0
dstm_console_sign_ins_total{method="sso",result="ok"} 1
dstm_console_sign_ins_total{method="sso",result="refused"} 1
`,
		},
		{
			name:   "console refusals",
			apply:  func(m *Metrics) { m.ConsoleRefused("forged_form") },
			metric: "dstm_console_requests_refused_total",
			want: `# HELP dstm_console_requests_refused_total Web console requests refused, by reason.
# TYPE dstm_console_requests_refused_total counter
dstm_console_requests_refused_total{reason="forged_form"} 1
dstm_console_requests_refused_total{reason="not_operator"} 0
`,
		},
		{
			name:   "revocations",
			apply:  func(m *Metrics) { m.Revocation(ResultOK) },
			metric: "dstm_revocations_total",
			want: `# HELP dstm_revocations_total Certificate revocations by result.
# TYPE dstm_revocations_total counter
dstm_revocations_total{result="error"} 0
dstm_revocations_total{result="ok"} 1
dstm_revocations_total{result="refused"} 0
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			tt.apply(m)
			if got := gatherText(t, m.Registry(), tt.metric); got != tt.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestHandshakeDuration(t *testing.T) {
	m := New()
	m.ObserveHandshake(TransportDTLS, ResultOK, 30*time.Millisecond)
	m.ObserveHandshake(TransportDTLS, ResultOK, 3*time.Second)
	m.ObserveHandshake(TransportDTLS, ResultTimeout, 10*time.Second)
	body := scrape(t, m)
	const h = "dstm_handshake_duration_seconds"
	for _, want := range []string{
		h + `_bucket{transport="dtls",le="0.02"} 0`,
		h + `_bucket{transport="dtls",le="0.04"} 1`,
		h + `_bucket{transport="dtls",le="2.56"} 1`,
		h + `_bucket{transport="dtls",le="5.12"} 2`,
		h + `_bucket{transport="dtls",le="+Inf"} 2`,
		h + `_sum{transport="dtls"} 3.03`,
		h + `_count{transport="dtls"} 2`,
		h + `_count{transport="tsp-tcp"} 0`,
		`dstm_handshakes_total{result="timeout",transport="dtls"} 1`,
		`dstm_handshakes_total{result="ok",transport="dtls"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

func TestHandshakeSeriesPreinitialised(t *testing.T) {
	m := New()
	if n := seriesCount(m.handshakes); n != 16 {
		t.Fatalf("dstm_handshakes_total has %d series before any handshake, want 4 transports x 4 results = 16", n)
	}
	m.ObserveHandshake(TransportTSPUDP, ResultRefused, time.Second)
	if got := counterValue(t, m.handshakes.WithLabelValues(TransportTSPUDP, ResultRefused)); got != 1 {
		t.Fatalf("refused handshakes = %v, want 1", got)
	}
	if got := seriesCount(m.handshakeDuration); got != 4 {
		t.Fatalf("a refused handshake must not be observed in the duration histogram (%d series)", got)
	}
}

func TestAllocationHistogramBuckets(t *testing.T) {
	m := New()
	for _, d := range []time.Duration{time.Microsecond, 40 * time.Microsecond, 2 * time.Millisecond, 100 * time.Millisecond} {
		m.ObserveAllocation(d)
	}
	body := scrape(t, m)
	for _, want := range []string{
		`dstm_lease_allocation_duration_seconds_bucket{le="1e-06"} 1`,
		`dstm_lease_allocation_duration_seconds_bucket{le="0.1"} 4`,
		`dstm_lease_allocation_duration_seconds_bucket{le="+Inf"} 4`,
		`dstm_lease_allocation_duration_seconds_count 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if n := strings.Count(body, "dstm_lease_allocation_duration_seconds_bucket{"); n != 17 {
		t.Errorf("allocation histogram has %d buckets, want 16 + Inf", n)
	}
}

func TestStatusLabel(t *testing.T) {
	for _, tt := range []struct {
		code int
		want string
	}{{200, "200"}, {100, "100"}, {999, "999"}, {99, StatusOther}, {1000, StatusOther}, {0, StatusOther}, {-200, StatusOther}} {
		if got := statusLabel(tt.code); got != tt.want {
			t.Errorf("statusLabel(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	m.ObserveHandshake(TransportDTLS, ResultOK, time.Second)
	m.TSPStatus(200)
	m.ObserveAllocation(time.Millisecond)
	m.Enrollment(ResultOK)
	m.Renewal(ResultOK)
	m.Revocation(ResultOK)
	m.SetSources(nil, nil, nil)
}

func TestHandlerExposesRuntimeCollectors(t *testing.T) {
	body := scrape(t, New())
	for _, want := range []string{"go_goroutines ", "go_memstats_alloc_bytes ", "process_start_time_seconds ", "dstm_handshakes_total{"} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

// scrape fetches the handler's text exposition over real HTTP.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	return get(t, srv.URL, http.StatusOK)
}

func get(t *testing.T, url string, wantCode int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s: status %d, want %d: %s", url, resp.StatusCode, wantCode, b)
	}
	return string(b)
}

func TestServe(t *testing.T) {
	m := New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln, ServeOptions{}) }()

	base := "http://" + ln.Addr().String()
	if body := get(t, base+Path, http.StatusOK); !strings.Contains(body, "dstm_tsp_responses_total") &&
		!strings.Contains(body, "dstm_handshakes_total") {
		t.Fatalf("scrape at %s lacks dstm metrics", Path)
	}
	get(t, base+"/other", http.StatusNotFound)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

func TestListenAndServeBadAddress(t *testing.T) {
	err := New().ListenAndServe(context.Background(), "256.0.0.1:bad", ServeOptions{})
	if err == nil || !strings.Contains(err.Error(), "metrics: listen") {
		t.Fatalf("err = %v, want a listen error", err)
	}
}

func TestServeListenerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = New().Serve(context.Background(), ln, ServeOptions{})
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve on a closed listener = %v, want an error", err)
	}
}

func TestConcurrentObserveAndScrape(t *testing.T) {
	m := New()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				m.ObserveHandshake(TransportTSPTLS, ResultOK, time.Millisecond)
				m.TSPStatus(200 + i)
				m.SetSources(nil, fakeSessions{"v4v6": i}, nil)
			}
		}()
	}
	for range 5 {
		get(t, srv.URL, http.StatusOK)
	}
	wg.Wait()
	if got := counterValue(t, m.handshakes.WithLabelValues(TransportTSPTLS, ResultOK)); got != 2000 {
		t.Fatalf("handshakes = %v, want 2000", got)
	}
}

func BenchmarkObserveHandshake(b *testing.B) {
	m := New()
	for b.Loop() {
		m.ObserveHandshake(TransportDTLS, ResultOK, 12*time.Millisecond)
	}
}

// TestServeProfiling: the runtime profiles are served only when asked for.
func TestServeProfiling(t *testing.T) {
	for _, on := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- New().Serve(ctx, ln, ServeOptions{Profiling: on}) }()
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		get(t, "http://"+ln.Addr().String()+"/debug/pprof/goroutine?debug=1", want)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
