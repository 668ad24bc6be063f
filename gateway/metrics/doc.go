// Package metrics holds every Prometheus metric of the DSTM gateway, on a
// private [prometheus.Registry] (never the global default) next to the Go
// runtime and process collectors. Names share the namespace "dstm";
// docs/metrics.md lists them.
//
// Events (handshakes, TSP status codes, certificate operations, lease
// allocation latency) are counted by the component that sees them through
// methods such as [Metrics.ObserveHandshake]; every method is safe for
// concurrent use and a no-op on a nil *Metrics, so a component can run
// without metrics. State (sessions, leases) and the data plane's own atomic
// counters are read at scrape time from the interfaces handed to
// [Metrics.SetSources], so nothing is copied on the hot path.
//
// [Metrics.Serve] serves /metrics on a listener the caller bound, so that an
// address error is reported before the gateway touches the host.
package metrics
