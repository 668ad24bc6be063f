package etcdstore

// Abandon stops keeping the ownership lease alive and disconnects without
// revoking it, as a killed process does.
func Abandon(s *Store) {
	s.cancel()
	<-s.done
	s.mu.Lock()
	s.lease = 0
	s.mu.Unlock()
	s.cli.Close()
}
