package tsp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dstmgw/dstm/tsp/sasl"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt transcripts from a live client-server run")

// tline is one transcript line: a client (C) or server (S) message.
type tline struct {
	dir     byte
	sep     bool // S+ : separate write
	hdr     *Header
	payload []byte
}

func (l tline) String() string {
	var b strings.Builder
	b.WriteByte(l.dir)
	if l.sep {
		b.WriteByte('+')
	}
	if l.hdr != nil {
		fmt.Fprintf(&b, " %08x %08x", signatureMask|l.hdr.Seq, l.hdr.Timestamp)
	}
	b.WriteString(" " + strconv.Quote(string(l.payload)))
	return b.String()
}

// tsession is one TSP session of a transcript file: its preamble (comments
// and @directives, kept verbatim), the effective directives and the lines.
type tsession struct {
	preamble []string
	dirs     map[string]string
	lines    []tline
}

var defaultDirectives = map[string]string{
	"transport": "tcp", "mechanism": "ANONYMOUS", "tunnels": "V4V6",
	"mechanisms": "ANONYMOUS PLAIN DIGEST-MD5", "user": "alice", "password": "secret",
	"nonce": "N142cbcee", "cnonce": "1795634805", "digest-uri": "tsp/[::1]:3653",
	"version": "2.0.2", "backend": "ok", "type": "v4v6", "client-v6": "2001:db8:5572::2",
	"anonymous-name": "[2001:db8:5572::2]:40000", "external": "", "accept-type": "",
	"client-error": "0", "server-final": "established", "client-final": "established",
}

func parseTranscript(t *testing.T, path string) []*tsession {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dirs := map[string]string{}
	for k, v := range defaultDirectives {
		dirs[k] = v
	}
	cur := &tsession{dirs: dirs}
	out := []*tsession{cur}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "---":
			next := map[string]string{}
			for k, v := range cur.dirs {
				next[k] = v
			}
			cur = &tsession{dirs: next}
			out = append(out, cur)
		case line == "" || line[0] == '#':
			cur.preamble = append(cur.preamble, line)
		case line[0] == '@':
			k, v, _ := strings.Cut(line[1:], " ")
			cur.dirs[k] = v
			cur.preamble = append(cur.preamble, line)
		default:
			cur.lines = append(cur.lines, parseTLine(t, line))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func parseTLine(t *testing.T, s string) tline {
	t.Helper()
	var l tline
	q := strings.IndexByte(s, '"')
	if q < 0 {
		t.Fatalf("transcript line without payload: %q", s)
	}
	fields := strings.Fields(s[:q])
	switch fields[0] {
	case "C", "S":
		l.dir = fields[0][0]
	case "S+":
		l.dir, l.sep = 'S', true
	default:
		t.Fatalf("bad direction in %q", s)
	}
	if len(fields) == 3 {
		seq, err1 := strconv.ParseUint(fields[1], 16, 32)
		ts, err2 := strconv.ParseUint(fields[2], 16, 32)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad header in %q", s)
		}
		l.hdr = &Header{Seq: uint32(seq) & seqMask, Timestamp: uint32(ts)}
	}
	p, err := strconv.Unquote(s[q:])
	if err != nil {
		t.Fatalf("bad payload in %q: %v", s, err)
	}
	l.payload = []byte(p)
	return l
}

func parseTransport(t testing.TB, s string) Transport {
	switch s {
	case "tcp":
		return TransportTCP
	case "tls":
		return TransportTLS
	case "udp":
		return TransportUDP
	}
	t.Fatalf("bad transport %q", s)
	return 0
}

func parseMechs(t testing.TB, s string) []sasl.Mechanism {
	var out []sasl.Mechanism
	for _, f := range strings.Fields(s) {
		m, err := sasl.ParseMechanism(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func serverFromDirectives(t testing.TB, d map[string]string) (*Server, *fakeBackend) {
	var tunnels []TunnelType
	for _, f := range strings.Fields(d["tunnels"]) {
		tt, err := ParseTunnelType(f)
		if err != nil {
			t.Fatal(err)
		}
		tunnels = append(tunnels, tt)
	}
	be := &fakeBackend{mode: d["backend"]}
	nonce := d["nonce"]
	srv, err := NewServer(ServerConfig{
		Transport: parseTransport(t, d["transport"]), Tunnels: tunnels,
		Mechanisms: parseMechs(t, d["mechanisms"]), Credentials: newCreds(), Realm: "fakerealm",
		AnonymousName: d["anonymous-name"], ExternalName: d["external"], Backend: be,
		NewNonce: func() (string, error) { return nonce, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, be
}

func clientFromDirectives(t testing.TB, d map[string]string) *Client {
	typ, err := ParseTunnelType(d["type"])
	if err != nil {
		t.Fatal(err)
	}
	cn, err := strconv.ParseInt(d["cnonce"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(ClientConfig{
		Transport: parseTransport(t, d["transport"]), Version: d["version"],
		Mechanism: parseMechs(t, d["mechanism"])[0], Username: d["user"], Password: d["password"],
		DigestURI: d["digest-uri"], Request: gogocRequest(typ, d["client-v6"]),
		AcceptType: TunnelType(d["accept-type"]), Now: func() time.Time { return time.Unix(cn, 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serverView replays the transcript's client lines into a server and
// returns the conversation as the server produced it.
func serverView(t *testing.T, s *tsession, byteAtATime bool) ([]tline, *Server) {
	srv, _ := serverFromDirectives(t, s.dirs)
	ctx := context.Background()
	var out []tline
	if srv.cfg.Transport == TransportUDP {
		ds, err := NewDatagramSession(srv)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range s.lines {
			if l.dir != 'C' {
				continue
			}
			out = append(out, l)
			reply, _ := ds.Handle(ctx, AppendDatagram(nil, *l.hdr, l.payload))
			if reply != nil {
				h, p, err := ParseDatagram(reply)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, tline{dir: 'S', hdr: &h, payload: bytes.Clone(p)})
			}
		}
		return out, srv
	}
	sp := NewSplitter(0)
	for _, l := range s.lines {
		if l.dir != 'C' {
			continue
		}
		out = append(out, l)
		chunks := [][]byte{l.payload}
		if byteAtATime {
			chunks = nil
			for i := range l.payload {
				chunks = append(chunks, l.payload[i:i+1])
			}
		}
		for _, c := range chunks {
			sp.Write(c)
			for {
				msg, ok, err := sp.Next()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				replies, _ := srv.Step(ctx, msg)
				for _, r := range replies {
					out = append(out, tline{dir: 'S', sep: r.Separate, payload: r.Payload})
				}
			}
		}
	}
	return out, srv
}

// clientView drives a client with the transcript's server lines and returns
// the conversation as the client produced it.
func clientView(t *testing.T, s *tsession) ([]tline, *Client, error) {
	c := clientFromDirectives(t, s.dirs)
	pending, err := c.Start()
	if err != nil {
		t.Fatal(err)
	}
	udp := c.cfg.Transport == TransportUDP
	sp := NewSplitter(0)
	var out []tline
	var cerr error
	for _, l := range s.lines {
		if l.dir == 'C' {
			if len(pending) == 0 {
				out = append(out, tline{dir: 'C', payload: []byte("<client sent nothing>")})
				continue
			}
			out = append(out, tline{dir: 'C', hdr: l.hdr, payload: pending[0].Payload})
			pending = pending[1:]
			continue
		}
		out = append(out, l)
		var msgs [][]byte
		if udp {
			msgs = [][]byte{l.payload}
		} else {
			sp.Write(l.payload)
			for {
				m, ok, err := sp.Next()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				msgs = append(msgs, m)
			}
		}
		for _, m := range msgs {
			r, err := c.Step(m)
			if err != nil {
				cerr = err
			}
			pending = append(pending, r...)
		}
	}
	for _, p := range pending {
		out = append(out, tline{dir: 'C', payload: p.Payload})
	}
	return out, c, cerr
}

// liveView runs a real client against a real server with the session's
// directives (used by -update and to cross-check the files).
func liveView(t *testing.T, s *tsession) []tline {
	srv, _ := serverFromDirectives(t, s.dirs)
	c := clientFromDirectives(t, s.dirs)
	ctx := context.Background()
	pending, _ := c.Start()
	var out []tline
	var ts []uint32
	for _, l := range s.lines {
		if l.dir == 'C' && l.hdr != nil {
			ts = append(ts, l.hdr.Timestamp)
		}
	}
	ds, _ := NewDatagramSession(srv)
	ssp, csp := NewSplitter(0), NewSplitter(0)
	for n := 0; len(pending) > 0; n++ {
		m := pending[0].Payload
		pending = pending[1:]
		var replies []Reply
		if srv.cfg.Transport == TransportUDP {
			h := Header{Seq: 0xF0 + uint32(n), Timestamp: 0x2fb + uint32(2*n)}
			if n < len(ts) {
				h.Timestamp = ts[n]
			}
			out = append(out, tline{dir: 'C', hdr: &h, payload: m})
			d, _ := ds.Handle(ctx, AppendDatagram(nil, h, m))
			if d == nil {
				break
			}
			rh, p, _ := ParseDatagram(d)
			out = append(out, tline{dir: 'S', hdr: &rh, payload: bytes.Clone(p)})
			replies = []Reply{{Payload: p}}
		} else {
			out = append(out, tline{dir: 'C', payload: m})
			replies = feedServer(ctx, srv, ssp, m)
			for _, r := range replies {
				out = append(out, tline{dir: 'S', sep: r.Separate, payload: r.Payload})
			}
		}
		pending = append(pending, feedClient(c, csp, replies, srv.cfg.Transport == TransportUDP)...)
	}
	return out
}

func feedServer(ctx context.Context, srv *Server, sp *Splitter, b []byte) []Reply {
	sp.Write(b)
	var out []Reply
	for {
		msg, ok, err := sp.Next()
		if err != nil || !ok {
			return out
		}
		r, _ := srv.Step(ctx, msg)
		out = append(out, r...)
	}
}

func feedClient(c *Client, sp *Splitter, replies []Reply, udp bool) []Reply {
	var out []Reply
	for _, r := range replies {
		if udp {
			o, _ := c.Step(r.Payload)
			out = append(out, o...)
			continue
		}
		sp.Write(r.Payload)
		for {
			msg, ok, err := sp.Next()
			if err != nil || !ok {
				break
			}
			o, _ := c.Step(msg)
			out = append(out, o...)
		}
	}
	return out
}

func diffLines(t *testing.T, what string, want, got []tline) {
	t.Helper()
	n := max(len(want), len(got))
	for i := 0; i < n; i++ {
		var w, g string
		if i < len(want) {
			w = want[i].String()
		}
		if i < len(got) {
			g = got[i].String()
		}
		if w != g {
			t.Fatalf("%s: line %d differs\nwant: %s\n got: %s", what, i+1, w, g)
		}
	}
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			sessions := parseTranscript(t, path)
			if *update {
				writeTranscript(t, path, sessions)
				sessions = parseTranscript(t, path)
			}
			for i, s := range sessions {
				t.Run(fmt.Sprintf("session%d", i+1), func(t *testing.T) { checkSession(t, s) })
			}
		})
	}
}

func checkSession(t *testing.T, s *tsession) {
	got, srv := serverView(t, s, false)
	diffLines(t, "server replay", s.lines, got)
	if st := srv.State().String(); st != s.dirs["server-final"] {
		t.Errorf("server final state %s, want %s", st, s.dirs["server-final"])
	}
	if srv.cfg.Transport != TransportUDP {
		got, _ = serverView(t, s, true)
		diffLines(t, "server replay byte by byte", s.lines, got)
	}
	got, c, cerr := clientView(t, s)
	diffLines(t, "client replay", s.lines, got)
	if st := c.State().String(); st != s.dirs["client-final"] {
		t.Errorf("client final state %s, want %s", st, s.dirs["client-final"])
	}
	wantCode, _ := strconv.Atoi(s.dirs["client-error"])
	var se *StatusError
	switch {
	case wantCode == 0 && cerr != nil:
		t.Errorf("client error %v", cerr)
	case wantCode != 0 && (!errors.As(cerr, &se) || se.Code != wantCode):
		t.Errorf("client error %v, want status %d", cerr, wantCode)
	}
	diffLines(t, "live client-server run", s.lines, liveView(t, s))
}

func writeTranscript(t *testing.T, path string, sessions []*tsession) {
	var b bytes.Buffer
	for i, s := range sessions {
		if i > 0 {
			b.WriteString("---\n")
		}
		for _, p := range s.preamble {
			b.WriteString(p + "\n")
		}
		for _, l := range liveView(t, s) {
			b.WriteString(l.String() + "\n")
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
