// Package bgp announces the gateway's IPv4 routes to the site's routers with an embedded BGP
// speaker (GoBGP as a library; no daemon to install): the pool aggregates (single node), or
// one /32 per active lease of this gateway's sessions (a cluster, where each client's address
// lives on whichever gateway holds its session).
//
// The Speaker only originates routes: it accepts none from its neighbours (an import policy
// rejects everything), so a router cannot steer the gateway's own forwarding.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/anypb"
)

// Neighbor is one BGP peer (a site router).
type Neighbor struct {
	Address  netip.Addr
	AS       uint32
	Port     uint16 // 0: 179
	Password string // TCP MD5 (RFC 2385); empty: none
}

// Config configures a Speaker.
type Config struct {
	LocalAS   uint32
	RouterID  netip.Addr
	Neighbors []Neighbor
	// NextHop of the announced routes; invalid: the gateway's own address on each session.
	NextHop     netip.Addr
	Communities []uint32 // RFC 1997 communities, AS<<16 | value
	// RestartTime, when not zero, enables graceful restart (RFC 4724) with this restart
	// time: a router keeps the routes while the gateway restarts.
	RestartTime time.Duration
	Log         zerolog.Logger
}

// NeighborStatus is the state of one session.
type NeighborStatus struct {
	Address     string
	AS          uint32
	State       string // idle, connect, active, opensent, openconfirm, established
	Since       time.Time
	Established bool
	// Received counts the routes the neighbour sent, Kept those of them in the gateway's RIB
	// (0: the import policy refuses them).
	Received, Kept uint64
}

// Status is what `status` and /metrics show.
type Status struct {
	Neighbors []NeighborStatus
	Announced int
	LastError string
}

// Speaker is a running BGP speaker.
type Speaker struct {
	cfg         Config
	s           *server.BgpServer
	cancelWatch context.CancelFunc // ends the peer-state watcher

	mu        sync.Mutex
	announced map[netip.Prefix]bool
	lastErr   string
}

// requestTimeout bounds one call into the speaker.
const requestTimeout = 5 * time.Second

// Start starts the speaker and its sessions; a neighbour that cannot be reached is retried by
// the speaker and never stops the gateway.
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	if cfg.LocalAS == 0 || !cfg.RouterID.Is4() || len(cfg.Neighbors) == 0 {
		return nil, errors.New("bgp: local AS, an IPv4 router id and a neighbour are needed")
	}
	s := server.NewBgpServer(server.LoggerOption(&logger{log: cfg.Log}))
	go s.Serve()
	wctx, cancelWatch := context.WithCancel(context.Background())
	sp := &Speaker{cfg: cfg, s: s, cancelWatch: cancelWatch, announced: map[netip.Prefix]bool{}}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.LocalAS, RouterId: cfg.RouterID.String(),
		ListenPort: -1, // the gateway connects to its routers; it accepts no session
	}})
	if err != nil {
		cancelWatch()
		s.Stop()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	if err := sp.rejectLearned(ctx); err != nil {
		sp.stop()
		return nil, fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := s.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, sp.onPeerEvent); err != nil {
		sp.stop()
		return nil, fmt.Errorf("bgp: watch: %w", err)
	}
	for _, n := range cfg.Neighbors {
		if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: sp.peer(n)}); err != nil {
			sp.stop()
			return nil, fmt.Errorf("bgp: neighbour %s: %w", n.Address, err)
		}
	}
	return sp, nil
}

// rejectLearned keeps whatever the neighbours send out of the RIB (a router sending its full
// table would cost memory for nothing): the global import policy rejects the paths of the
// neighbours and accepts the gateway's own.
func (sp *Speaker) rejectLearned(ctx context.Context) error {
	const set, policy = "dstm-neighbors", "dstm-reject-learned"
	var list []string
	for _, n := range sp.cfg.Neighbors {
		list = append(list, netip.PrefixFrom(n.Address, n.Address.BitLen()).String())
	}
	if err := sp.s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR, Name: set, List: list,
	}}); err != nil {
		return err
	}
	if err := sp.s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: policy, Statements: []*api.Statement{{
		Name:       policy + "-all",
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: set}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
	}}}}); err != nil {
		return err
	}
	return sp.s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_IMPORT,
		Policies: []*api.Policy{{Name: policy}}, DefaultAction: api.RouteAction_ACCEPT,
	}})
}

func (sp *Speaker) peer(n Neighbor) *api.Peer {
	port := uint32(n.Port)
	if port == 0 {
		port = 179
	}
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.AS, AuthPassword: n.Password},
		Transport: &api.Transport{RemotePort: port},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 5, HoldTime: 9, KeepaliveInterval: 3}},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: family, Enabled: true}}},
	}
	if rt := sp.cfg.RestartTime; rt > 0 {
		p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(rt / time.Second)}
		p.AfiSafis[0].MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return p
}

func (sp *Speaker) onPeerEvent(r *api.WatchEventResponse) {
	p := r.GetPeer()
	if p == nil || p.Type != api.WatchEventResponse_PeerEvent_STATE || p.Peer == nil || p.Peer.State == nil {
		return
	}
	st := p.Peer.State
	ev := sp.cfg.Log.Info()
	if st.SessionState != api.PeerState_ESTABLISHED {
		ev = sp.cfg.Log.Warn()
	}
	ev.Str("neighbor", st.NeighborAddress).Uint32("neighbor_as", st.PeerAsn).
		Str("state", stateName(st.SessionState)).Msg("BGP session " + stateName(st.SessionState))
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Set makes the announced routes exactly want: new ones are announced, gone ones withdrawn.
func (sp *Speaker) Set(ctx context.Context, want []netip.Prefix) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	keep := make(map[netip.Prefix]bool, len(want))
	var errs []error
	for _, p := range want {
		keep[p] = true
		if sp.announced[p] {
			continue
		}
		if err := sp.path(ctx, p, false); err != nil {
			errs = append(errs, err)
			continue
		}
		sp.announced[p] = true
	}
	for p := range sp.announced {
		if keep[p] {
			continue
		}
		if err := sp.path(ctx, p, true); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(sp.announced, p)
	}
	err := errors.Join(errs...)
	if err != nil {
		sp.lastErr = err.Error()
	}
	return err
}

// path announces (or withdraws) p.
func (sp *Speaker) path(ctx context.Context, p netip.Prefix, withdraw bool) error {
	if !p.Addr().Is4() {
		return fmt.Errorf("bgp: %v is not an IPv4 prefix", p)
	}
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return err
	}
	nh := "0.0.0.0" // the session's local address
	if sp.cfg.NextHop.IsValid() {
		nh = sp.cfg.NextHop.String()
	}
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	next, _ := anypb.New(&api.NextHopAttribute{NextHop: nh})
	attrs := []*anypb.Any{origin, next}
	if len(sp.cfg.Communities) > 0 {
		c, _ := anypb.New(&api.CommunitiesAttribute{Communities: sp.cfg.Communities})
		attrs = append(attrs, c)
	}
	path := &api.Path{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Nlri: nlri, Pattrs: attrs}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if withdraw {
		if err := sp.s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
			return fmt.Errorf("bgp: withdraw %v: %w", p, err)
		}
		return nil
	}
	if _, err := sp.s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path}); err != nil {
		return fmt.Errorf("bgp: announce %v: %w", p, err)
	}
	return nil
}

// Announced returns the announced prefixes, sorted.
func (sp *Speaker) Announced() []netip.Prefix {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]netip.Prefix, 0, len(sp.announced))
	for p := range sp.announced {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Addr().Less(out[j].Addr()) || out[i].Addr() == out[j].Addr() && out[i].Bits() < out[j].Bits()
	})
	return out
}

// Status reports the sessions and what is announced.
func (sp *Speaker) Status(ctx context.Context) Status {
	sp.mu.Lock()
	st := Status{Announced: len(sp.announced), LastError: sp.lastErr}
	sp.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	err := sp.s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		ns := NeighborStatus{}
		if p.State != nil {
			ns.Address, ns.AS, ns.State = p.State.NeighborAddress, p.State.PeerAsn, stateName(p.State.SessionState)
			ns.Established = p.State.SessionState == api.PeerState_ESTABLISHED
		}
		if ns.Address == "" && p.Conf != nil {
			ns.Address, ns.AS = p.Conf.NeighborAddress, p.Conf.PeerAsn
		}
		if p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil && ns.Established {
			ns.Since = p.Timers.State.Uptime.AsTime()
		}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				ns.Received += af.State.Received
			}
		}
		st.Neighbors = append(st.Neighbors, ns)
	})
	if err != nil && st.LastError == "" {
		st.LastError = err.Error()
	}
	kept := map[string]uint64{}
	_ = sp.s.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL,
		Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}}, func(d *api.Destination) {
		for _, p := range d.Paths {
			if p.NeighborIp != "" {
				kept[p.NeighborIp]++
			}
		}
	})
	for i := range st.Neighbors {
		st.Neighbors[i].Kept = kept[st.Neighbors[i].Address]
	}
	slices.SortFunc(st.Neighbors, func(a, b NeighborStatus) int {
		switch {
		case a.Address < b.Address:
			return -1
		case a.Address > b.Address:
			return 1
		}
		return 0
	})
	return st
}

// Stop withdraws every route, closes the sessions and stops the speaker.
func (sp *Speaker) Stop(ctx context.Context) error {
	err := sp.Set(ctx, nil)
	sp.stop()
	return err
}

func (sp *Speaker) stop() {
	sp.cancelWatch()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	_ = sp.s.StopBgp(ctx, &api.StopBgpRequest{})
	sp.s.Stop()
}

// logger adapts zerolog to GoBGP's logger; GoBGP's info is our debug (it is chatty), its
// warnings and errors ours.
type logger struct{ log zerolog.Logger }

func (l *logger) fields(e *zerolog.Event, f gobgplog.Fields) *zerolog.Event {
	for k, v := range f {
		if k == "Topic" || k == "Key" {
			e = e.Interface("bgp_"+k, v)
		}
	}
	return e
}
func (l *logger) Panic(msg string, f gobgplog.Fields) { l.fields(l.log.Error(), f).Msg("bgp: " + msg) }
func (l *logger) Fatal(msg string, f gobgplog.Fields) { l.fields(l.log.Error(), f).Msg("bgp: " + msg) }
func (l *logger) Error(msg string, f gobgplog.Fields) { l.fields(l.log.Warn(), f).Msg("bgp: " + msg) }
func (l *logger) Warn(msg string, f gobgplog.Fields)  { l.fields(l.log.Warn(), f).Msg("bgp: " + msg) }
func (l *logger) Info(msg string, f gobgplog.Fields)  { l.fields(l.log.Debug(), f).Msg("bgp: " + msg) }
func (l *logger) Debug(msg string, f gobgplog.Fields) { l.fields(l.log.Trace(), f).Msg("bgp: " + msg) }
func (l *logger) SetLevel(gobgplog.LogLevel)          {}
func (l *logger) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }
