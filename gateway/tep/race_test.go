//go:build race

package tep

// raceEnabled: sync.Pool drops objects at random under the race detector.
const raceEnabled = true
