package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed web
var webFS embed.FS

// staticFS holds console.js and console.css, served under /static/.
func staticFS() fs.FS {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree always has web/
	}
	return sub
}

// pages are the parsed templates: each page with the layout.
type pages struct{ byName map[string]*template.Template }

var funcs = template.FuncMap{
	"bytes":  formatBytes,
	"rate":   formatRate,
	"uptime": formatUptime,
	"time":   formatTime,
	"pct":    formatPercent,
}

func loadPages() (*pages, error) {
	names, err := fs.Glob(webFS, "web/templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(webFS, "web/templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", base, err)
		}
		p.byName[strings.TrimSuffix(base, ".html")] = t
	}
	return p, nil
}

// pageData is what every page gets; Data is the page's own.
type pageData struct {
	Title  string
	Nav    string // the menu entry to highlight
	Viewer viewer
	In     bool // signed in
	CSRF   string
	Now    time.Time
	Data   any
}

// render writes page name with status.
func (s *Server) render(w http.ResponseWriter, status int, name string, v viewer, title, nav string, data any) {
	t := s.pages.byName[name]
	var buf bytes.Buffer
	pd := pageData{Title: title, Nav: nav, Viewer: v, In: v.Identity != "", CSRF: v.sess.csrf, Now: s.now(), Data: data}
	if err := t.ExecuteTemplate(&buf, "layout", pd); err != nil {
		s.log.Error().Err(err).Str("page", name).Msg("console: page not rendered")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail renders the error page with a message for the person in front of the browser.
func (s *Server) fail(w http.ResponseWriter, _ *http.Request, v viewer, status int, text string) {
	s.render(w, status, "error", v, http.StatusText(status), "", text)
}

func formatBytes(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 5 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %cB", f, "kMGTP"[i-1])
}

// formatRate shows bytes a second as bits a second.
func formatRate(bytesPerSecond float64) string {
	b := bytesPerSecond * 8
	switch {
	case b < 1000:
		return fmt.Sprintf("%.0f bit/s", b)
	case b < 1e6:
		return fmt.Sprintf("%.1f kbit/s", b/1e3)
	case b < 1e9:
		return fmt.Sprintf("%.1f Mbit/s", b/1e6)
	}
	return fmt.Sprintf("%.2f Gbit/s", b/1e9)
}

func formatUptime(d time.Duration) string {
	d = d.Truncate(time.Second)
	if d < 0 {
		d = 0
	}
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	if days > 0 {
		return fmt.Sprintf("%dd %s", days, d)
	}
	return d.String()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func formatPercent(part, whole uint64) string {
	if whole == 0 {
		return "0 %"
	}
	return fmt.Sprintf("%.1f %%", float64(part)*100/float64(whole))
}
