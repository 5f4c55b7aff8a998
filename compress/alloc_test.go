package compress

import "testing"

// TestSteadyStateAllocs: once buffers have grown, Encode, Decode and
// Residual.Encode allocate nothing.
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	n := 20000
	for _, setting := range suite {
		c := newTestCodec(t, setting, n, 1)
		x := gaussian(n, 1, 1)
		r, err := c.NewResidual(n)
		if err != nil {
			t.Fatal(err)
		}
		var msg []byte
		var d []float32
		run := func() {
			if msg, err = c.Encode(msg[:0], x); err != nil {
				t.Fatal(err)
			}
			if d, err = c.Decode(d[:0], msg); err != nil {
				t.Fatal(err)
			}
			if msg, err = r.Encode(msg[:0], x); err != nil {
				t.Fatal(err)
			}
		}
		run()
		if a := testing.AllocsPerRun(5, run); a != 0 {
			t.Errorf("%s: %v allocations per Encode+Decode+Residual.Encode", setting, a)
		}
	}
}
