package attribution

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func TestSketchFor(t *testing.T) {
	h := []byte("theta-next")
	for _, tc := range []struct {
		participants int
		exact        bool
	}{
		{0, true}, {1, true}, {ExactGramMax, true}, {ExactGramMax + 1, false}, {256, false}, {MaxMembers, false},
	} {
		sk := SketchFor(tc.participants, 7, h)
		if (sk == Sketch{}) != tc.exact {
			t.Errorf("%d participants: %v, want exact %v", tc.participants, sk, tc.exact)
		}
		if !tc.exact && (sk.Dims != SketchDims || sk.check(tc.participants) != nil) {
			t.Errorf("%d participants: %v", tc.participants, sk)
		}
	}
	a := SketchFor(100, 7, h)
	if a != SketchFor(100, 7, h) || a == SketchFor(100, 8, h) || a == SketchFor(100, 7, []byte("other")) {
		t.Fatal("the seed is not a function of the round's seed and θ_{t+1}'s hash alone")
	}
}

// intVector has small integer values: their sums are exact in any order.
func intVector(w *world) []float32 {
	x := w.gauss(4)
	for i := range x {
		x[i] = float32(math.Round(float64(x[i])))
	}
	return x
}

// TestSketchSlicesAddUp: coordinates hash by their global index, so the sketches of a vector's
// slices add up to the vector's sketch, and Combine's sketch of sliced partials is that of the
// whole vector.
func TestSketchSlicesAddUp(t *testing.T) {
	w := newWorld(11, 3000, 2)
	sk := Sketch{Dims: 64, Seed: 99}
	ms := []string{"a", "b", "c"}
	us := [][]float32{intVector(w), intVector(w), intVector(w)}
	whole, err := ComputePartial(0, 3000, w.g, nil, ms, us, sk)
	if err != nil {
		t.Fatal(err)
	}
	parts := slicedPartials(t, w, nil, ms, us, sk, [][2]int{{2000, 3000}, {0, 700}, {700, 2000}})
	sums, err := Combine(3000, parts)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sums.S, whole.S) || !slices.Equal(sums.NormSq, whole.NormSq) {
		t.Fatal("the slices' sketches do not add up to the vector's")
	}
	parts[1].Sketch.Seed++
	if _, err := Combine(3000, parts); err == nil {
		t.Fatal("partials sketched with different seeds were combined")
	}
	exact, _ := ComputePartial(0, 3000, w.g, nil, ms, us, Sketch{})
	if _, err := Combine(3000, []Partial{exact, parts[0]}); err == nil {
		t.Fatal("an exact and a sketched partial were combined")
	}
}

// TestSketchCosine: the sketch's cosine is within a few spreads, (1 − c²)/√Dims, of the exact
// one, and exactly 1 for an update and a positive multiple of it.
func TestSketchCosine(t *testing.T) {
	const n = 20000
	w := newWorld(5, n, 1)
	base := w.gauss(1)
	sk := Sketch{Dims: SketchDims, Seed: 0x5eed}
	for _, tc := range []struct {
		name string
		b    []float32
	}{
		{"independent", w.gauss(1)},
		{"cos 0.3", w.mix(0.3, base, float32(math.Sqrt(1-0.09)), w.gauss(1))},
		{"cos 0.6", w.mix(0.6, base, 0.8, w.gauss(1))},
		{"cos 0.9", w.mix(0.9, base, float32(math.Sqrt(1-0.81)), w.gauss(1))},
		{"cos 0.97", w.mix(0.97, base, float32(math.Sqrt(1-0.97*0.97)), w.gauss(1))},
		{"opposite", scaled(base, -1)},
		{"copy", base},
		{"scaled copy", scaled(base, 3.5)},
		{"sparse copy", func() []float32 { // a top-k-like update: 2 % of the values
			x := make([]float32, n)
			for j := 0; j < n; j += 50 {
				x[j] = base[j]
			}
			return x
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, us := []string{"a", "b"}, [][]float32{base, tc.b}
			if tc.name == "sparse copy" {
				us[0] = tc.b
			}
			p, err := ComputePartial(0, n, w.g, nil, ms, us, sk)
			if err != nil {
				t.Fatal(err)
			}
			e, _ := ComputePartial(0, n, w.g, nil, ms, us, Sketch{})
			sums, _ := Combine(n, []Partial{p})
			exactSums, _ := Combine(n, []Partial{e})
			got, want := sums.cosine()(0, 1), exactSums.cosine()(0, 1)
			spread := (1 - want*want) / math.Sqrt(SketchDims)
			if math.Abs(got-want) > 4*spread+1e-12 {
				t.Fatalf("sketched cosine %.4f, exact %.4f: beyond 4 × %.4f", got, want, spread)
			}
			if !slices.Equal(p.NormSq, e.NormSq) {
				t.Fatal("the sketched partial's norms are not exact")
			}
		})
	}
}

// TestSketchDeterministic: the same updates give the same bits, whatever order the slices'
// partials arrive in.
func TestSketchDeterministic(t *testing.T) {
	run := func(reverse bool) Sums {
		w := newWorld(13, 5000, 4)
		ms := members(80)
		us := make([][]float32, len(ms))
		for i := range us {
			us[i] = w.mix(0.5, w.gbar, 1, w.gauss(1))
		}
		sk := SketchFor(len(ms), 3, []byte("h"))
		parts := slicedPartials(t, w, w.u, ms, us, sk, [][2]int{{0, 1234}, {1234, 5000}})
		if reverse {
			slices.Reverse(parts)
		}
		s, err := Combine(5000, parts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := run(false), run(true)
	bits := func(xs []float64) []uint64 {
		out := make([]uint64, len(xs))
		for i, x := range xs {
			out[i] = math.Float64bits(x)
		}
		return out
	}
	if !slices.Equal(bits(a.S), bits(b.S)) || !slices.Equal(bits(a.GD), bits(b.GD)) || !slices.Equal(bits(a.NormSq), bits(b.NormSq)) {
		t.Fatal("the sums differ between runs")
	}
	ca, cb := a.cosine(), b.cosine()
	for i := range a.Members {
		for j := range a.Members {
			if math.Float64bits(ca(i, j)) != math.Float64bits(cb(i, j)) {
				t.Fatalf("cos(%d,%d) differs", i, j)
			}
		}
	}
}

// TestCopyCaughtWithTheSketch: in a round of 256 participants — scored from sketches — a copied
// update (after its own compression noise), a scaled copy and a copy of a copy are grouped with
// the original and flagged, and no honest member is, though honest updates agree closely (cosine
// ≈ 0.6 to 0.85 between them).
func TestCopyCaughtWithTheSketch(t *testing.T) {
	const P = 256
	w := newWorld(21, 20000, 8)
	if SketchFor(P, 1, nil).Dims == 0 {
		t.Fatal("a round of 256 participants is not sketched")
	}
	var names []string
	var updates [][]float32
	var parts []Participant
	add := func(name string, d []float32) {
		names, updates = append(names, name), append(updates, d)
		parts = append(parts, part(name, uint32(len(parts)+1), 1000, ""))
	}
	for i := 0; i < P-3; i++ {
		noise := float32(0.8)
		if i%2 == 1 {
			noise = 0.42 // closer to the consensus direction
		}
		add(fmt.Sprintf("h%03d", i), w.mix(1, w.gbar, noise, w.gauss(1)))
	}
	victim := updates[17]
	copyOf := func(d []float32, f, noise float32) []float32 {
		return w.mix(f, d, noise*f, w.gauss(float64(norm(d))/math.Sqrt(float64(w.dim))))
	}
	add("x-copy", copyOf(victim, 1, 0.15))        // cos ≈ 0.989
	add("x-scaled", copyOf(victim, 3, 0.1))       // ×3, cos ≈ 0.995
	add("x-recopy", copyOf(updates[P-3], 1, 0.1)) // a copy of the copy
	// Honest updates' closest pair (of the first 64), exactly: the margin the sketch must keep.
	var closest float64
	for a := 0; a < 64; a++ {
		for b := a + 1; b < 64; b++ {
			closest = max(closest, dot(updates[a], updates[b])/(norm(updates[a])*norm(updates[b])))
		}
	}
	t.Logf("closest honest pair: cos %.3f; copy: %.3f", closest, dot(victim, updates[P-3])/(norm(victim)*norm(updates[P-3])))
	// Whatever the round's seed: the sketch is not lucky once.
	for seed := uint64(1); seed <= 6; seed++ {
		w.sk = SketchFor(P, seed, []byte("theta-next"))
		res := w.score(t, names, updates, parts)
		for _, m := range res.Members {
			dup := hasFlag(res, m.Member, "duplicate")
			switch {
			case m.Member == "h017":
				if dup || m.Group != "h017" {
					t.Errorf("seed %d: the original: group %q, duplicate %v", seed, m.Group, dup)
				}
			case m.Member[0] == 'x':
				if !dup || m.Group != "h017" {
					t.Errorf("seed %d: %s: group %q, duplicate %v; want grouped with h017 and flagged", seed, m.Member, m.Group, dup)
				}
			case dup || m.Group != m.Member:
				t.Errorf("seed %d: honest %s grouped with %q (duplicate %v)", seed, m.Member, m.Group, dup)
			}
		}
		pay := payouts(t, res, 1_000_000)
		for _, x := range []string{"x-copy", "x-scaled", "x-recopy"} {
			if pay[x] != 0 {
				t.Errorf("seed %d: %s earned %d", seed, x, pay[x])
			}
		}
	}
}

// slicedPartials computes the partial of each cut [lo, hi) of the updates us (and of u, the
// previous step, unless nil), as the aggregators of those slices would.
func slicedPartials(t *testing.T, w *world, u []float32, ms []string, us [][]float32, sk Sketch, cuts [][2]int) []Partial {
	t.Helper()
	var parts []Partial
	for _, cut := range cuts {
		var g [][]float32
		for _, gk := range w.g {
			g = append(g, gk[cut[0]:cut[1]])
		}
		var sl [][]float32
		for _, d := range us {
			sl = append(sl, d[cut[0]:cut[1]])
		}
		var uc []float32
		if u != nil {
			uc = u[cut[0]:cut[1]]
		}
		p, err := ComputePartial(uint64(cut[0]), uint64(cut[1]), g, uc, ms, sl, sk)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	return parts
}
