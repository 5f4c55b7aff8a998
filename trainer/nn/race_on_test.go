//go:build race

package nn

// raceEnabled: built with -race, under which sync.Pool drops objects at random (so pooled scratch
// is allocated again) and allocation counts mean nothing.
const raceEnabled = true
