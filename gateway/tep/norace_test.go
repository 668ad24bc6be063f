//go:build !race

package tep

const raceEnabled = false
