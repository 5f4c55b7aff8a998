package attribution

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchSlice is a realistic slice: a 262,144-parameter model over four aggregators, scored
// against the validator's default 8 micro-batches.
const benchSlice, benchK = 1 << 16, 8

func benchInputs(P int) (g [][]float32, u []float32, ms []string, us [][]float32) {
	rng := rand.New(rand.NewPCG(uint64(P), 3))
	vec := func() []float32 {
		x := make([]float32, benchSlice)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	for range benchK {
		g = append(g, vec())
	}
	u, ms = vec(), members(P)
	for range P {
		us = append(us, vec())
	}
	return g, u, ms, us
}

// BenchmarkScorePartial is an aggregator's work for one slice (ComputePartial) as the round's
// participants grow: exact up to ExactGramMax, sketched beyond (P = 64 is measured both ways).
// ns/participant stays flat where the work is linear in P.
func BenchmarkScorePartial(b *testing.B) {
	for _, tc := range []struct {
		P      int
		sketch bool
	}{{8, false}, {64, false}, {64, true}, {256, true}, {1000, true}} {
		name := fmt.Sprintf("P=%d/exact", tc.P)
		sk := Sketch{}
		if tc.sketch {
			name, sk = fmt.Sprintf("P=%d/sketch", tc.P), Sketch{Dims: SketchDims, Seed: 1}
		}
		b.Run(name, func(b *testing.B) {
			g, u, ms, us := benchInputs(tc.P)
			b.SetBytes(int64(tc.P * benchSlice * 4))
			b.ResetTimer()
			for b.Loop() {
				if _, err := ComputePartial(0, benchSlice, g, u, ms, us, sk); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tc.P), "ns/participant")
		})
	}
}

// BenchmarkScoreRound is the leader's work once the partials are in: Combine over four slices
// and Score (its duplicate pass compares every pair: P²/2 cosines, of SketchDims products each
// when sketched).
func BenchmarkScoreRound(b *testing.B) {
	for _, P := range []int{8, 64, 256, 1000} {
		b.Run(fmt.Sprintf("P=%d", P), func(b *testing.B) {
			w := newWorld(uint64(P), 4*256, benchK)
			ms := members(P)
			us := make([][]float32, P)
			parts := make([]Participant, P)
			for i := range us {
				us[i] = w.mix(0.3, w.gbar, 1, w.gauss(1))
				parts[i] = part(ms[i], uint32(i+1), 100, "")
			}
			sk := SketchFor(P, 1, nil)
			var partials []Partial
			for s := range 4 {
				var g [][]float32
				for _, gk := range w.g {
					g = append(g, gk[s*256:(s+1)*256])
				}
				var sl [][]float32
				for _, d := range us {
					sl = append(sl, d[s*256:(s+1)*256])
				}
				p, err := ComputePartial(uint64(s*256), uint64((s+1)*256), g, w.u[s*256:(s+1)*256], ms, sl, sk)
				if err != nil {
					b.Fatal(err)
				}
				partials = append(partials, p)
			}
			b.ResetTimer()
			for b.Loop() {
				sums, err := Combine(4*256, partials)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Score(sums, parts, Config{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*P), "ns/participant")
		})
	}
}
