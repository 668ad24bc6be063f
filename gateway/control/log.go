package control

import (
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dstmgw/dstm/internal/limit"
)

// Lines about what anyone can cause (floods, scans, spoofed datagrams) are written at most
// sampleBurst times per sampleEvery and kind; the metrics count every case.
const (
	sampleBurst = 10
	sampleEvery = time.Minute
)

// sampledLog rate-limits log lines by kind; the next line of a kind says how many were
// dropped ("suppressed"), so that a flood shows as a few lines with large counts.
type sampledLog struct {
	log zerolog.Logger
	now func() time.Time

	mu    sync.Mutex
	kinds map[string]*sampleState
}

type sampleState struct {
	bucket     *limit.TokenBucket
	suppressed int
}

func newSampledLog(log zerolog.Logger, now func() time.Time) *sampledLog {
	return &sampledLog{log: log, now: now, kinds: map[string]*sampleState{}}
}

// info writes a line of the kind at info level with write, unless the kind is over its rate.
func (l *sampledLog) info(kind string, write func(*zerolog.Event)) {
	l.emit(kind, zerolog.InfoLevel, write)
}

// warn is info at warn level.
func (l *sampledLog) warn(kind string, write func(*zerolog.Event)) {
	l.emit(kind, zerolog.WarnLevel, write)
}

func (l *sampledLog) emit(kind string, level zerolog.Level, write func(*zerolog.Event)) {
	e := l.log.WithLevel(level)
	if e == nil {
		return
	}
	l.mu.Lock()
	st := l.kinds[kind]
	if st == nil {
		st = &sampleState{bucket: limit.NewTokenBucket(float64(sampleBurst)/sampleEvery.Seconds(), sampleBurst, l.now)}
		l.kinds[kind] = st
	}
	if !st.bucket.Allow() {
		st.suppressed++
		l.mu.Unlock()
		e.Discard()
		return
	}
	n := st.suppressed
	st.suppressed = 0
	l.mu.Unlock()
	if n > 0 {
		e = e.Int("suppressed", n)
	}
	write(e)
}
