package dtls

import (
	"fmt"

	"github.com/pion/logging"
	"github.com/rs/zerolog"
)

// pionLogger routes pion's logging into zerolog at debug level (trace
// stays trace): what pion reports, this package returns or counts anyway.
type pionLogger struct{ log zerolog.Logger }

type pionLoggerFactory struct{ log zerolog.Logger }

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With().Str("scope", "pion/"+scope).Logger()}
}

func (l pionLogger) Trace(msg string)                  { l.log.Trace().Msg(msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.tracef(format, args) }
func (l pionLogger) Debug(msg string)                  { l.log.Debug().Msg(msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.debugf(format, args) }
func (l pionLogger) Info(msg string)                   { l.log.Debug().Msg(msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.debugf(format, args) }
func (l pionLogger) Warn(msg string)                   { l.log.Debug().Msg(msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.debugf(format, args) }
func (l pionLogger) Error(msg string)                  { l.log.Debug().Msg(msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.debugf(format, args) }

func (l pionLogger) tracef(format string, args []any) {
	if e := l.log.Trace(); e.Enabled() {
		e.Msg(fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) debugf(format string, args []any) {
	if e := l.log.Debug(); e.Enabled() {
		e.Msg(fmt.Sprintf(format, args...))
	}
}
