package compress

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// suite lists settings every conformance test runs on: every format, every
// sparsifier, options and compositions.
var suite = []string{
	"fp32", "fp16", "bf16",
	"q8", "q4", "q2", "q1",
	"q8/b256", "q4/b8", "q2/b16", "q1/b8",
	"q8/clip3", "q4/clip2.5", "q8/sr", "q4/b32/sr", "q2/sr",
	"topk:0.01", "topk:0.1/c64+q4", "topk:0.05+fp16", "topk:0.01+q2", "topk:0.3/c16+q8/sr",
	"topk:1/c8", "topk:0.5/c2+bf16", "topk:0.01+q4/clip3",
	"topk:0.1/c64/m+q1", "topk:0.05/c16/m+q4", "topk:0.2/c8/m", "topk:0.03/m+q1",
	"lowrank:4", "lowrank:2/i2+q8", "lowrank:1+fp16", "lowrank:8/i3+bf16",
	"fp32+zstd", "q4+zstd", "topk:0.01+q4+zstd", "lowrank:4+q8+zstd",
}

// testShape returns a Shape for n values with a few matrix segments, a
// vector segment and gaps, or nil when n is too small.
func testShape(n int) Shape {
	var s Shape
	off := 3
	dims := [][2]int{{16, 12}, {1, 9}, {20, 20}, {5, 40}, {64, 48}, {3, 3}}
	for _, d := range dims {
		if off+d[0]*d[1] > n {
			break
		}
		s = append(s, Segment{Offset: off, Rows: d[0], Cols: d[1]})
		off += d[0]*d[1] + 2
	}
	return s
}

func newTestCodec(t testing.TB, setting string, n int, seed uint64) *Codec {
	t.Helper()
	s, err := Parse(setting)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Setting: s, Seed: seed}
	if s.Matrices {
		cfg.Shape = testShape(n)
	}
	if s.Sparsifier == LowRank {
		cfg.Shape = testShape(n)
		if len(cfg.Shape) == 0 {
			cfg.Shape = Shape{{Offset: 0, Rows: 1, Cols: max(n, 1)}}
			if n == 0 {
				return nil
			}
		}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", setting, err)
	}
	return c
}

// gaussian returns n N(0, σ²) values from a seeded PCG.
func gaussian(n int, sigma float64, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0x636f686f7274))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * sigma)
	}
	return x
}

// heavy returns values with a wide dynamic range, repeated magnitudes,
// zeros and negative zeros: the cases tie-breaking and scales must handle.
func heavy(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n)
	for i := range x {
		switch r.IntN(8) {
		case 0:
			x[i] = 0
		case 1:
			x[i] = float32(math.Copysign(0, -1))
		case 2:
			x[i] = 0.5 // ties
		case 3:
			x[i] = -0.5
		default:
			x[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(9)-6)))
		}
	}
	return x
}

// refTopK is the reference selection: per chunk, indices sorted by
// (|x| descending, index ascending), the first k, in increasing order.
func refTopK(s Setting, shape Shape, x []float32) []int {
	s = s.normalized()
	var keep []int
	for _, r := range topkPlan(&s, shape, len(x), nil) {
		if !r.sparse {
			for i := r.start; i < r.end; i++ {
				keep = append(keep, i)
			}
			continue
		}
		keep = append(keep, refTopKChunks(s, x, r.start, r.end)...)
	}
	return keep
}

func refTopKChunks(s Setting, x []float32, lo, hi int) []int {
	var keep []int
	for start := lo; start < hi; start += s.Chunk {
		m := min(s.Chunk, hi-start)
		idx := make([]int, m)
		for i := range idx {
			idx[i] = start + i
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			ma, mb := math.Abs(float64(x[a])), math.Abs(float64(x[b]))
			switch {
			case ma > mb:
				return -1
			case ma < mb:
				return 1
			}
			return a - b
		})
		sel := idx[:topkK(s.Fraction, m)]
		slices.Sort(sel)
		keep = append(keep, sel...)
	}
	return keep
}

// checkFormat checks the documented per-element error bound of the value
// stage (format s.Format) for values x decoded as d.
func checkFormat(t testing.TB, s Setting, x, d []float32) {
	t.Helper()
	s = s.normalized()
	bad := 0
	report := func(i int, bound float64) {
		if bad < 5 {
			t.Errorf("%s: value %d: x=%g decoded %g, |error| %g > bound %g", s, i, x[i], d[i], math.Abs(float64(x[i])-float64(d[i])), bound)
		}
		bad++
	}
	switch s.Format {
	case FP32:
		for i := range x {
			if x[i] != d[i] {
				report(i, 0)
			}
		}
	case FP16:
		for i := range x {
			ax := math.Abs(float64(x[i]))
			bound := max(ax*0x1p-11, 0x1p-25)
			if ax > 65504 {
				bound = ax - 65504
			}
			if math.Abs(float64(x[i])-float64(d[i])) > bound {
				report(i, bound)
			}
		}
	case BF16:
		for i := range x {
			ax := math.Abs(float64(x[i]))
			bound := max(ax*0x1p-8, 0x1p-133)
			if math.Abs(float64(x[i])-float64(d[i])) > bound {
				report(i, bound)
			}
		}
	case Q1:
		// Exactly ±float32(mean |x| of the block), negative for x < 0.
		for b := 0; b < len(x); b += s.Block {
			blk := x[b:min(len(x), b+s.Block)]
			var sum float64
			for _, v := range blk {
				sum += math.Abs(float64(v))
			}
			a := float32(sum / float64(len(blk)))
			for j, v := range blk {
				want := a
				if v < 0 {
					want = -a
				}
				if d[b+j] != want {
					report(b+j, math.Abs(float64(v)-float64(want)))
				}
			}
		}
	default:
		L := float64(levels(s.Format))
		clip := math.Inf(1)
		if s.Clip > 0 {
			clip = float64(float32(s.Clip * rms(x)))
		}
		for b := 0; b < len(x); b += s.Block {
			blk := x[b:min(len(x), b+s.Block)]
			var a float64
			for _, v := range blk {
				a = max(a, math.Abs(float64(v)))
			}
			a = min(a, clip)
			step := a / (2 * L)
			if s.Stochastic {
				step = a / L
			}
			for j, v := range blk {
				cv := max(-clip, min(clip, float64(v)))
				bound := step + a*0x1p-22 + 0x1p-149 + math.Abs(float64(v)-cv)
				if math.Abs(float64(v)-float64(d[b+j])) > bound {
					report(b+j, bound)
				}
			}
		}
	}
}

// checkDecoded checks d = Decode(Encode(x)) against the codec's documented
// error bounds.
func checkDecoded(t testing.TB, c *Codec, x, d []float32) {
	t.Helper()
	if len(d) != len(x) {
		t.Fatalf("%s: decoded %d values, want %d", c.name, len(d), len(x))
	}
	if i := firstNonFinite(d); i >= 0 {
		t.Fatalf("%s: decoded value %d is %v", c.name, i, d[i])
	}
	s := c.set
	switch s.Sparsifier {
	case Dense:
		checkFormat(t, s, x, d)
	case TopK:
		keep := refTopK(s, c.cfg.Shape, x)
		xs, ds := make([]float32, len(keep)), make([]float32, len(keep))
		kept := make([]bool, len(x))
		for j, i := range keep {
			xs[j], ds[j], kept[i] = x[i], d[i], true
		}
		checkFormat(t, s, xs, ds)
		for i := range x {
			if !kept[i] && d[i] != 0 {
				t.Fatalf("%s: value %d not among the top-k but decoded as %g", c.name, i, d[i])
			}
		}
	case LowRank:
		var xs, ds []float32
		prev := 0
		for _, g := range c.lrSegs {
			xs = append(xs, x[prev:g.off]...)
			ds = append(ds, d[prev:g.off]...)
			prev = g.off + g.rows*g.cols
			var nx, ne float64
			for i := g.off; i < prev; i++ {
				nx += float64(x[i]) * float64(x[i])
				e := float64(x[i]) - float64(d[i])
				ne += e * e
			}
			// P·Pᵀ·M is a projection of M: its error is at most ‖M‖, plus
			// the value stage's rounding of the factors.
			tol := 1e-4
			if s.Format != FP32 {
				tol = 0.1
			}
			if math.Sqrt(ne) > math.Sqrt(nx)*(1+tol)+1e-30 {
				t.Errorf("%s: segment at %d: ‖M − decoded‖ = %g > ‖M‖ = %g", c.name, g.off, math.Sqrt(ne), math.Sqrt(nx))
			}
		}
		xs = append(xs, x[prev:]...)
		ds = append(ds, d[prev:]...)
		checkFormat(t, s, xs, ds)
	}
}

// exactFeedback reports whether, for this setting, decoded + new residual
// equals e + delta bit for bit every round (see Residual).
func exactFeedback(s Setting) bool {
	return s.Sparsifier != LowRank && !s.Stochastic && s.Clip == 0 && s.Format != Q1
}

// recrc recomputes the CRC of a message whose header is intact in length.
func recrc(msg []byte) []byte {
	if len(msg) < 6 || len(msg) < hdrFixed+int(msg[5]) {
		return msg
	}
	off := 6 + int(msg[5]) + 16
	c := crc32.Update(0, castagnoli, msg[:off])
	c = crc32.Update(c, castagnoli, msg[off+4:])
	binary.LittleEndian.PutUint32(msg[off:], c)
	return msg
}

// payloadOffset returns where the payload of msg starts.
func payloadOffset(msg []byte) int { return hdrFixed + int(msg[5]) }

func fromBits(v uint32) float32 { return math.Float32frombits(v) }
