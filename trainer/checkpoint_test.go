package trainer

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleCheckpoint() *Checkpoint {
	v := func(s float32) []float32 { return []float32{s, -s, 2 * s} }
	return &Checkpoint{Cohort: 7, Round: 3, Theta: v(1), Momentum: v(0.5), Residual: v(0.25), AdamM: v(0.1), AdamV: v(0.01), AdamT: 150}
}

func TestCheckpointRoundTripsAndRefusesDamage(t *testing.T) {
	c := sampleCheckpoint()
	path := filepath.Join(t.TempDir(), "peer.ckpt")
	if err := SaveCheckpoint(path, c); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cohort != 7 || got.Round != 3 || got.AdamT != 150 || got.Theta[2] != 2 || got.AdamV[1] != -0.01 {
		t.Fatalf("round trip: %+v", got)
	}
	b, _ := c.MarshalBinary()
	nan, _ := (&Checkpoint{Theta: []float32{float32(math.NaN())}, Momentum: []float32{0}, Residual: []float32{0}, AdamM: []float32{0}, AdamV: []float32{0}}).MarshalBinary()
	for name, bad := range map[string][]byte{
		"truncated":  b[:len(b)-5],
		"padded":     append(append([]byte(nil), b...), 0),
		"flipped":    func() []byte { x := append([]byte(nil), b...); x[40] ^= 1; return x }(),
		"magic":      append([]byte("NOPE"), b[4:]...),
		"version":    func() []byte { x := append([]byte(nil), b...); x[4] = 9; return x }(),
		"empty":      nil,
		"non-finite": nan,
	} {
		if _, err := UnmarshalCheckpoint(bad); !errors.Is(err, ErrCheckpoint) {
			t.Errorf("%s: %v, want ErrCheckpoint", name, err)
		}
	}
	os.WriteFile(path, b[:20], 0o600)
	if _, err := LoadCheckpoint(path); err == nil || !errors.Is(err, ErrCheckpoint) || !contains(err.Error(), path) {
		t.Fatalf("truncated file: %v, want an error naming %s", err, path)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func FuzzUnmarshalCheckpoint(f *testing.F) {
	b, _ := sampleCheckpoint().MarshalBinary()
	f.Add(b)
	f.Add(b[:30])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := UnmarshalCheckpoint(b)
		if err != nil {
			return
		}
		again, err := c.MarshalBinary()
		if err != nil || string(again) != string(b) {
			t.Fatalf("decoded checkpoint does not re-encode to the same bytes")
		}
	})
}
