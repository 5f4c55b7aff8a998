//go:build race

package gemm

// raceEnabled: built with -race, under which sync.Pool drops objects at random (so pooled buffers
// are allocated again) and allocation counts mean nothing.
const raceEnabled = true
