package tep

import "time"

// writerLinger is how long a session's writer waits for more packets after its queue ran dry
// before it exits: a busy session keeps one writer goroutine, an idle one has none.
const writerLinger = 2 * time.Second

// outQueue is a session's queue towards the tunnel: a FIFO grown on demand up to
// Config.QueueLen (beyond it the newest packet is dropped as queue_full; queued packets keep
// their order), drained in batches by a writer goroutine that exists only while there is
// traffic. Its memory is given back when the writer exits. Fields are guarded by Session.outMu.
type outQueue struct {
	bufs    []*outBuf
	head    int           // bufs[head:] are queued
	writer  bool          // a writer goroutine runs
	busy    bool          // packets taken from the queue, or a direct write, are being written
	wake    chan struct{} // cap 1: wakes a lingering writer; made with the first writer
	stopped bool          // the session was removed: nothing is queued any more
}

func (q *outQueue) len() int { return len(q.bufs) - q.head }

// push queues ob for the tunnel, starting a writer if none runs.
func (s *Session) push(ob *outBuf) {
	s.oqMu.Lock()
	q := &s.oq
	switch {
	case q.stopped:
		s.oqMu.Unlock()
		s.tep.putOut(ob)
		s.tep.drop(DropNoSession, 1)
		return
	case q.len() >= s.tep.cfg.QueueLen:
		s.oqMu.Unlock()
		s.tep.putOut(ob)
		s.tep.drop(DropQueueFull, 1)
		return
	}
	q.bufs = append(q.bufs, ob)
	s.kickLocked()
	s.oqMu.Unlock()
}

// kickLocked starts a writer, or wakes the one that lingers, for what is queued.
func (s *Session) kickLocked() {
	q := &s.oq
	if !q.writer {
		q.writer = true
		if q.wake == nil {
			q.wake = make(chan struct{}, 1)
		}
		s.writers.Add(1)
		go s.routineWriteOutside()
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// beginDirect claims the link for a direct write when nothing is queued or being written.
// endDirect gives it back.
func (s *Session) beginDirect() bool {
	s.oqMu.Lock()
	defer s.oqMu.Unlock()
	q := &s.oq
	if q.stopped || q.busy || q.len() > 0 {
		return false
	}
	q.busy = true
	return true
}

// endDirect ends a direct write and kicks the writer for what was queued meanwhile: take
// hands out nothing while a direct write is under way.
func (s *Session) endDirect() {
	s.oqMu.Lock()
	defer s.oqMu.Unlock()
	s.oq.busy = false
	if s.oq.len() > 0 && !s.oq.stopped {
		s.kickLocked()
	}
}

// written ends the write of a batch take handed out; the writer takes the next by itself.
func (s *Session) written() {
	s.oqMu.Lock()
	s.oq.busy = false
	s.oqMu.Unlock()
}

// take moves up to cap(bufs) queued packets to bufs and marks them as being written (the
// caller calls written after), or moves none while a direct write is under way. stop
// reports that the session was removed: the writer exits.
func (s *Session) take(bufs []*outBuf) (_ []*outBuf, stop bool) {
	s.oqMu.Lock()
	defer s.oqMu.Unlock()
	q := &s.oq
	if q.stopped {
		q.writer = false
		return bufs, true
	}
	if q.busy {
		return bufs, false
	}
	n := copy(bufs[len(bufs):cap(bufs)], q.bufs[q.head:])
	q.busy = n > 0
	bufs = bufs[:len(bufs)+n]
	clear(q.bufs[q.head : q.head+n])
	q.head += n
	if q.head == len(q.bufs) {
		q.bufs, q.head = q.bufs[:0], 0
	}
	return bufs, false
}

// idle ends the writer if nothing was queued meanwhile, and gives the queue's memory back.
func (s *Session) idle() bool {
	s.oqMu.Lock()
	defer s.oqMu.Unlock()
	q := &s.oq
	if q.len() > 0 && !q.stopped {
		return false
	}
	q.writer, q.bufs, q.head = false, nil, 0
	return true
}

// stopQueue ends the writer, waits for it and recycles what is queued. After it nothing is
// queued: the session was removed.
func (s *Session) stopQueue() {
	s.oqMu.Lock()
	q := &s.oq
	q.stopped = true
	for _, ob := range q.bufs[q.head:] {
		s.tep.putOut(ob)
	}
	q.bufs, q.head = nil, 0
	if q.writer {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	s.oqMu.Unlock()
	s.writers.Wait()
}

// writerRunning reports whether a writer goroutine runs (tests).
func (s *Session) writerRunning() bool {
	s.oqMu.Lock()
	defer s.oqMu.Unlock()
	return s.oq.writer
}

// routineWriteOutside drains the session's queue into its link in batches of up to
// writeBatch, and exits writerLinger after the queue ran dry, or when the session is removed.
// What it dequeues while no link is attached is dropped as link_error.
func (s *Session) routineWriteOutside() {
	defer s.writers.Done()
	bufs := make([]*outBuf, 0, writeBatch)
	pkts := make([][]byte, 0, writeBatch)
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		var stop bool
		if bufs, stop = s.take(bufs); stop {
			return
		}
		if len(bufs) > 0 {
			s.writeBatch(bufs, pkts)
			s.written()
			for i, ob := range bufs {
				s.tep.putOut(ob)
				bufs[i] = nil
			}
			bufs = bufs[:0]
			continue
		}
		if linger == nil {
			linger = time.NewTimer(writerLinger)
		} else {
			linger.Reset(writerLinger)
		}
		select {
		case <-s.oq.wake:
		case <-linger.C:
			if s.idle() {
				return
			}
		}
	}
}
