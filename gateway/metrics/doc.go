// Package metrics holds every Prometheus metric of the DSTM gateway.
//
// All metrics live on a private [prometheus.Registry] owned by a [Metrics]
// value (the client library's global default registry is never used), next to
// the Go runtime and process collectors. Names share the namespace "dstm"; the
// full list, with labels and meaning, is in docs/metrics.md.
//
// Two kinds of metric are kept here:
//
//   - Events (handshakes, TSP status codes, certificate operations, lease
//     allocation latency) are counted by the component that sees them, through
//     methods such as [Metrics.ObserveHandshake] and [Metrics.TSPStatus].
//     Every method is safe for concurrent use and is a no-op on a nil
//     *Metrics, so a component can run with metrics disabled.
//   - State (sessions by transport, leases by pool and state) and data-plane
//     counters that the data plane already keeps as atomics are read at scrape
//     time from small consumer interfaces ([SessionStats], [LeaseStats],
//     [DataplaneStats]) handed over with [Metrics.SetSources]. Nothing is
//     copied on the hot path.
//
// Serving: [Metrics.Handler] returns the promhttp handler for the private
// registry, for callers that mount it themselves. [Metrics.Serve] runs a small
// HTTP server with that handler at /metrics on a listener the caller bound
// (binding first lets the caller report an address error before the gateway
// touches the host); [Metrics.ListenAndServe] binds and serves in one call.
package metrics
