package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the "direction" label of the data-plane counters, seen from the
// tunnel side.
const (
	DirectionIn  = "in"  // from the client through the tunnel towards the IPv4 world
	DirectionOut = "out" // from the IPv4 world through the tunnel to the client
)

// LeaseCount is the number of leases of one pool in one state.
type LeaseCount struct {
	Pool  string
	State string
	N     int
}

// LeaseStats is read at every scrape for the dstm_leases gauge. Entries with
// the same pool and state are summed.
type LeaseStats interface {
	LeaseCounts() []LeaseCount
}

// SessionStats is read at every scrape for the dstm_sessions gauge.
type SessionStats interface {
	SessionCounts() map[string]int
}

// Traffic is the running total of tunnelled packets and bytes for one
// direction and one transport.
type Traffic struct {
	Direction string
	Transport string
	Packets   uint64
	Bytes     uint64
}

// DataplaneSnapshot is a copy of the data plane's counters; Traffic entries
// with the same direction and transport are summed.
type DataplaneSnapshot struct {
	Traffic []Traffic
	Drops   map[string]uint64 // by reason, e.g. "queue_full"
	// Denied is what access rules denied, per access block and direction;
	// entries with the same labels are summed.
	Denied             []Denied
	ConntrackEvictions uint64
	// ParkedReaders is how many established TCP and TLS sessions wait for their next bytes
	// without a goroutine (internal/park) now.
	ParkedReaders int
}

// Denied is the count of packets one access block (its field path in the
// policy) denied in one direction ("outbound" from the client, "inbound" to it).
type Denied struct {
	Rule, Direction string
	Packets         uint64
}

// DataplaneStats is read at every scrape. Its counters must never decrease.
type DataplaneStats interface {
	Dataplane() DataplaneSnapshot
}

// ClusterStats is read at every scrape for dstm_cluster_owner (cluster mode only).
type ClusterStats interface {
	// ClusterOwner names this gateway and says whether its etcd ownership lease is live.
	ClusterOwner() (node string, owner bool)
}

// BGPStats is read at every scrape for the dstm_bgp_* gauges (with bgp: only).
type BGPStats interface {
	// BGPState returns how many prefixes are announced and, per neighbour address, whether
	// its session is established.
	BGPState() (announced int, established map[string]bool)
}

// sources is swapped as a whole so that a scrape sees one consistent set.
type sources struct {
	leases    LeaseStats
	sessions  SessionStats
	dataplane DataplaneStats
}

// stateCollector turns the sources into const metrics at scrape time.
type stateCollector struct {
	src     atomic.Pointer[sources]
	cluster atomic.Pointer[ClusterStats]
	bgp     atomic.Pointer[BGPStats]

	sessions *prometheus.Desc
	leases   *prometheus.Desc
	packets  *prometheus.Desc
	bytes    *prometheus.Desc
	drops    *prometheus.Desc
	denied   *prometheus.Desc
	evicted  *prometheus.Desc
	parked   *prometheus.Desc
	owner    *prometheus.Desc
	bgpUp    *prometheus.Desc
	bgpAnn   *prometheus.Desc
}

var _ prometheus.Collector = (*stateCollector)(nil)

func newStateCollector() *stateCollector {
	name := func(n string) string { return prometheus.BuildFQName(Namespace, "", n) }
	return &stateCollector{
		sessions: prometheus.NewDesc(name("sessions"), "Live sessions by data transport.", []string{"transport"}, nil),
		leases:   prometheus.NewDesc(name("leases"), "Leases by pool and state.", []string{"pool", "state"}, nil),
		packets:  prometheus.NewDesc(name("packets_total"), "Tunnelled IPv4 packets by direction and transport.", []string{"direction", "transport"}, nil),
		bytes:    prometheus.NewDesc(name("bytes_total"), "Tunnelled IPv4 bytes (inner packets) by direction and transport.", []string{"direction", "transport"}, nil),
		drops:    prometheus.NewDesc(name("dropped_packets_total"), "Packets dropped by the data plane, by reason.", []string{"reason"}, nil),
		denied:   prometheus.NewDesc(name("access_denied_packets_total"), "Packets denied by access rules, by access block (its field path in the policy) and direction.", []string{"rule", "direction"}, nil),
		evicted:  prometheus.NewDesc(name("conntrack_evictions_total"), "Flows evicted from full per-session connection tables (access rules).", nil, nil),
		parked:   prometheus.NewDesc(name("parked_readers"), "Established TCP and TLS sessions idle now, whose reader waits without a goroutine.", nil, nil),
		owner:    prometheus.NewDesc(name("cluster_owner"), "1 while this gateway's etcd ownership lease is live (cluster mode): it may serve sessions.", []string{"node"}, nil),
		bgpUp:    prometheus.NewDesc(name("bgp_neighbor_up"), "1 while the BGP session with the neighbour is established.", []string{"neighbor"}, nil),
		bgpAnn:   prometheus.NewDesc(name("bgp_announced_prefixes"), "IPv4 prefixes announced by BGP now.", nil, nil),
	}
}

func (c *stateCollector) set(s *sources) { c.src.Store(s) }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.leases, c.packets, c.bytes, c.drops, c.denied, c.evicted, c.parked, c.owner, c.bgpUp, c.bgpAnn} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if cs := c.cluster.Load(); cs != nil {
		node, owner := (*cs).ClusterOwner()
		v := 0.0
		if owner {
			v = 1
		}
		emit(ch, c.owner, prometheus.GaugeValue, v, node)
	}
	if bs := c.bgp.Load(); bs != nil {
		n, up := (*bs).BGPState()
		emit(ch, c.bgpAnn, prometheus.GaugeValue, float64(n))
		for nb, ok := range up {
			v := 0.0
			if ok {
				v = 1
			}
			emit(ch, c.bgpUp, prometheus.GaugeValue, v, nb)
		}
	}
	s := c.src.Load()
	if s == nil {
		return
	}
	if s.sessions != nil {
		for transport, n := range s.sessions.SessionCounts() {
			emit(ch, c.sessions, prometheus.GaugeValue, float64(n), transport)
		}
	}
	if s.leases != nil {
		c.collectLeases(ch, s.leases.LeaseCounts())
	}
	if s.dataplane != nil {
		c.collectDataplane(ch, s.dataplane.Dataplane())
	}
}

type labelPair [2]string

func (c *stateCollector) collectLeases(ch chan<- prometheus.Metric, counts []LeaseCount) {
	sum := make(map[labelPair]int, len(counts))
	for _, lc := range counts {
		sum[labelPair{lc.Pool, lc.State}] += lc.N
	}
	for k, n := range sum {
		emit(ch, c.leases, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

func (c *stateCollector) collectDataplane(ch chan<- prometheus.Metric, snap DataplaneSnapshot) {
	type pb struct{ packets, bytes uint64 }
	sum := make(map[labelPair]pb, len(snap.Traffic))
	for _, t := range snap.Traffic {
		k := labelPair{t.Direction, t.Transport}
		v := sum[k]
		sum[k] = pb{v.packets + t.Packets, v.bytes + t.Bytes}
	}
	for k, v := range sum {
		emit(ch, c.packets, prometheus.CounterValue, float64(v.packets), k[0], k[1])
		emit(ch, c.bytes, prometheus.CounterValue, float64(v.bytes), k[0], k[1])
	}
	for reason, n := range snap.Drops {
		emit(ch, c.drops, prometheus.CounterValue, float64(n), reason)
	}
	denied := make(map[labelPair]uint64, len(snap.Denied))
	for _, d := range snap.Denied {
		denied[labelPair{d.Rule, d.Direction}] += d.Packets
	}
	for k, n := range denied {
		emit(ch, c.denied, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	emit(ch, c.evicted, prometheus.CounterValue, float64(snap.ConntrackEvictions))
	emit(ch, c.parked, prometheus.GaugeValue, float64(snap.ParkedReaders))
}

// emit sends a const metric, or an invalid metric carrying the error (the
// scrape then reports it) instead of panicking on a bad label value.
func emit(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}
