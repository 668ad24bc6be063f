// Package logging builds the one zerolog.Logger that cmd/ passes down: JSON, or console
// output on a terminal, at a level that can change at run time (SIGHUP). docs/logging.md
// lists the field names.
package logging

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// Level is the run-time adjustable minimum level of a logger made by New.
type Level struct{ v atomic.Int32 }

// Set changes the level ("trace".."error").
func (l *Level) Set(level string) error {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return fmt.Errorf("log level %q: want trace, debug, info, warn or error", level)
	}
	l.v.Store(int32(lvl))
	return nil
}

// filter drops events below the current level before they reach the writer.
type filter struct {
	w     io.Writer
	level *Level
}

func (f filter) Write(p []byte) (int, error) { return f.w.Write(p) }

func (f filter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if int32(l) < f.level.v.Load() {
		return len(p), nil
	}
	return f.w.Write(p)
}

// New returns a logger writing to w at level in format ("auto", "json", "console"), and the
// handle to change its level later. "auto" picks console output when w is a terminal.
func New(w io.Writer, level, format string) (zerolog.Logger, *Level, error) {
	lv := &Level{}
	if err := lv.Set(level); err != nil {
		return zerolog.Nop(), nil, err
	}
	out := w
	switch format {
	case "console":
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	case "auto":
		if isTerminal(w) {
			out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	case "json":
	default:
		return zerolog.Nop(), nil, fmt.Errorf("log format %q: want auto, json or console", format)
	}
	return zerolog.New(filter{w: out, level: lv}).With().Timestamp().Logger(), lv, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
