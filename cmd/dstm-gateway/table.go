package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/dstmgw/dstm/gateway/admin"
)

// The table writers render API results for people (scripts use JSON): rows sorted
// without modifying the caller's slice, "-" for empty cells, durations relative to
// now and rounded down to the second, times in UTC RFC 3339.

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

func row(tw io.Writer, cells ...string) {
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func writeLeasesTable(w io.Writer, leases []admin.Lease, now time.Time) error {
	sorted := slices.Clone(leases)
	slices.SortStableFunc(sorted, func(a, b admin.Lease) int { return compareAddr(a.Addr, b.Addr) })
	// A cluster's gateways own their sessions' leases: then a GATEWAY column says whose.
	cluster := slices.ContainsFunc(sorted, func(l admin.Lease) bool { return l.Gateway != "" })
	tw := newTable(w)
	head := []string{"ADDRESS", "POOL", "STATE", "STATIC", "IDENTITY", "TRANSPORT", "ENDPOINT", "SESSION", "EXPIRES"}
	if cluster {
		head = append(head, "GATEWAY")
	}
	row(tw, head...)
	for _, l := range sorted {
		cells := []string{cell(l.Addr), cell(l.Pool), cell(l.State), yesNo(l.Static), cell(l.Identity),
			cell(l.Transport), cell(l.Endpoint), cell(l.Session), relative(l.Expires, now)}
		if cluster {
			cells = append(cells, cell(l.Gateway))
		}
		row(tw, cells...)
	}
	return tw.Flush()
}

func writeSessionsTable(w io.Writer, sessions []admin.Session, now time.Time) error {
	sorted := slices.Clone(sessions)
	slices.SortStableFunc(sorted, func(a, b admin.Session) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ID, b.ID))
	})
	// A control node without a TEP has no traffic counts; a TEP column says where the data is.
	split := slices.ContainsFunc(sorted, func(s admin.Session) bool { return s.TEP != "" })
	tw := newTable(w)
	head := []string{"ID", "IDENTITY", "LEASE", "TRANSPORT", "MECHANISM", "ENDPOINT", "UPTIME", "PKTS-IN", "PKTS-OUT", "BYTES-IN", "BYTES-OUT"}
	if split {
		head = append(head[:7], "TEP")
	}
	row(tw, head...)
	for _, s := range sorted {
		cells := []string{cell(s.ID), cell(s.Identity), cell(s.Lease), cell(s.Transport), cell(s.Mechanism), cell(s.Endpoint),
			since(s.Since, now)}
		if split {
			cells = append(cells, cell(s.TEP))
		} else {
			cells = append(cells, strconv.FormatUint(s.PacketsIn, 10), strconv.FormatUint(s.PacketsOut, 10),
				humanBytes(s.BytesIn), humanBytes(s.BytesOut))
		}
		row(tw, cells...)
	}
	return tw.Flush()
}

// writeStatus writes the gateway's status, then a table of its pools (USED is
// the percentage of addresses that are not free).
func writeStatus(w io.Writer, s admin.Status, now time.Time) error {
	tw := newTable(w)
	row(tw, "version:", cell(s.Version))
	row(tw, "started:", timestamp(s.Started)+uptime(s.Started, now))
	row(tw, "listen:", list(s.Listen))
	row(tw, "sessions:", strconv.Itoa(s.Sessions))
	if len(s.Roles) > 0 {
		row(tw, "roles:", list(s.Roles))
	}
	for _, t := range s.TEPs {
		what := []string{"inner " + t.InnerV4}
		if t.DTLSPort != 0 {
			what = append(what, fmt.Sprintf("DTLS port %d", t.DTLSPort))
		}
		if t.Plain {
			what = append(what, "v4v6")
		}
		row(tw, "tep:", fmt.Sprintf("%s %s (%s), %d sessions", t.Name, t.IPv6, strings.Join(what, ", "), t.Sessions))
	}
	if c := s.Cluster; c != nil {
		row(tw, "cluster node:", cell(c.Node))
		row(tw, "etcd:", list(c.Endpoints))
		own := "LOST: new sessions are refused"
		if c.Owner {
			own = "live (holds at least until " + timestamp(c.ValidUntil) + ")"
		}
		row(tw, "ownership:", own)
		names := make([]string, 0, len(c.Members))
		for _, m := range c.Members {
			names = append(names, m.Name)
		}
		members := list(names)
		if c.Error != "" {
			members = "unknown: " + c.Error
		}
		row(tw, "members:", members)
		for _, w := range c.Warnings {
			row(tw, "warning:", w)
		}
	}
	if b := s.BGP; b != nil {
		row(tw, "bgp:", fmt.Sprintf("announcing %s, %d prefixes", b.Announce, b.Announced))
		for _, n := range b.Neighbors {
			state := n.State
			if !n.Since.IsZero() {
				state += " since " + timestamp(n.Since)
			}
			row(tw, "  neighbor:", fmt.Sprintf("%s AS%d %s", n.Address, n.AS, state))
		}
		if b.LastError != "" {
			row(tw, "  last error:", b.LastError)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	return writePools(w, s.Pools)
}

func writePools(w io.Writer, pools []admin.PoolStatus) error {
	tw := newTable(w)
	row(tw, "POOL", "RANGES", "SIZE", "OFFERED", "ACTIVE", "HELD", "STATIC", "FREE", "USED")
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	for _, p := range pools {
		row(tw, cell(p.Name), cell(strings.Join(p.Ranges, ",")), u(p.Size), u(p.Offered), u(p.Active),
			u(p.Held), u(p.Static), u(p.Free), percent(p.Size-min(p.Free, p.Size), p.Size))
	}
	return tw.Flush()
}

func writeTokenResult(w io.Writer, t admin.TokenResult, now time.Time) error {
	tw := newTable(w)
	row(tw, "token:", cell(t.Token))
	row(tw, "identity:", cell(t.Identity))
	row(tw, "expires:", timestamp(t.Expires)+" ("+relative(t.Expires, now)+")")
	row(tw, "root fingerprint:", cell(t.Fingerprint))
	return tw.Flush()
}

func writeRevokeResult(w io.Writer, r admin.RevokeResult) error {
	tw := newTable(w)
	row(tw, "revoked serials:", list(r.Serials))
	row(tw, "sessions closed:", strconv.Itoa(r.Sessions))
	return tw.Flush()
}

// compareAddr orders IP addresses numerically and anything unparsable
// after them, by text.
func compareAddr(a, b string) int {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	switch {
	case errA == nil && errB == nil:
		return pa.Compare(pb)
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	return strings.Compare(a, b)
}

// cell makes a value safe for one table cell: "-" when empty, Go-quoted when
// it holds white space or control characters that would break the columns.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}

// list renders values for a "key: value" line: joined by ", ", Go-quoted
// only when they hold control characters, "-" when empty.
func list(values []string) string {
	if len(values) == 0 {
		return "-"
	}
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = v
		if strings.ContainsFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) {
			out[i] = strconv.Quote(v)
		}
	}
	return strings.Join(out, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// relative renders t against now as "in 4m30s" or "2m ago".
func relative(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "-"
	case t.Before(now):
		return humanDuration(now.Sub(t)) + " ago"
	default:
		return "in " + humanDuration(t.Sub(now))
	}
}

// since renders the time elapsed from t to now.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(now.Sub(t))
}

func uptime(started, now time.Time) string {
	if started.IsZero() {
		return ""
	}
	return " (up " + humanDuration(now.Sub(started)) + ")"
}

// humanDuration renders d (its absolute value) rounded down to the second
// with at most two units: "0s", "45s", "4m30s", "2h5m", "3d4h".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return twoUnits(s/60, "m", s%60, "s")
	case s < 86400:
		return twoUnits(s/3600, "h", s%3600/60, "m")
	default:
		return twoUnits(s/86400, "d", s%86400/3600, "h")
	}
}

func twoUnits(a int64, ua string, b int64, ub string) string {
	if b == 0 {
		return fmt.Sprintf("%d%s", a, ua)
	}
	return fmt.Sprintf("%d%s%d%s", a, ua, b, ub)
}

// humanBytes renders n in IEC units without a space, so that a table column
// stays one field: "512B", "1.5KiB", "12.0MiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func percent(used, size uint64) string {
	if size == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(used)/float64(size))
}
