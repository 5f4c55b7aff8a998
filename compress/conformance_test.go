package compress

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
)

// The conformance suite: every setting in suite passes every test here
// (in the manner of gonum's testblas).

var suiteLengths = []int{0, 1, 2, 7, 63, 64, 65, 129, 1000, 4097, 10007}

func TestConformanceRoundTrip(t *testing.T) {
	for _, setting := range suite {
		t.Run(setting, func(t *testing.T) {
			for _, n := range suiteLengths {
				for gi, gen := range []func(int, uint64) []float32{
					func(n int, s uint64) []float32 { return gaussian(n, 1e-3, s) },
					heavy,
				} {
					c := newTestCodec(t, setting, n, 42)
					if c == nil {
						continue
					}
					x := gen(n, uint64(n*10+gi))
					msg, err := c.Encode(nil, x)
					if err != nil {
						t.Fatalf("n=%d: Encode: %v", n, err)
					}
					if m := c.MaxEncodedLen(n); len(msg) > m || (!c.set.Zstd && len(msg) != m) {
						t.Fatalf("n=%d: message of %d bytes, MaxEncodedLen %d", n, len(msg), m)
					}
					h, err := ReadHeader(msg)
					if err != nil {
						t.Fatalf("n=%d: ReadHeader: %v", n, err)
					}
					if h.Setting != c.Setting().String() || h.Count != uint64(n) || h.ShapeHash != c.cfg.Shape.Hash() {
						t.Fatalf("n=%d: header %+v", n, h)
					}
					d, err := c.Decode(nil, msg)
					if err != nil {
						t.Fatalf("n=%d: Decode: %v", n, err)
					}
					checkDecoded(t, c, x, d)
				}
			}
		})
	}
}

func TestConformanceDeterministic(t *testing.T) {
	for _, setting := range suite {
		t.Run(setting, func(t *testing.T) {
			n := 5000
			x := heavy(n, 3)
			c1 := newTestCodec(t, setting, n, 9)
			c2 := newTestCodec(t, setting, n, 9)
			m1, err := c1.Encode(nil, x)
			if err != nil {
				t.Fatal(err)
			}
			// Interleave another input so scratch reuse is exercised.
			if _, err := c1.Encode(nil, gaussian(n, 1, 4)); err != nil {
				t.Fatal(err)
			}
			m2, err := c1.Encode([]byte("prefix"), x)
			if err != nil {
				t.Fatal(err)
			}
			m3, err := c2.Encode(nil, x)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(m2, []byte("prefix")) || !bytes.Equal(m1, m2[6:]) || !bytes.Equal(m1, m3) {
				t.Fatal("identical input coded to different bytes")
			}
			// Decode appends to dst.
			prefix := []float32{1, 2, 3}
			d, err := c1.Decode(prefix, m1)
			if err != nil {
				t.Fatal(err)
			}
			if len(d) != 3+n || d[0] != 1 || d[2] != 3 {
				t.Fatalf("Decode did not append to dst: len %d", len(d))
			}
		})
	}
}

func TestConformanceErrorFeedback(t *testing.T) {
	for _, setting := range suite {
		t.Run(setting, func(t *testing.T) {
			n := 3001
			c := newTestCodec(t, setting, n, 5)
			r, err := c.NewResidual(n)
			if err != nil {
				t.Fatal(err)
			}
			sumIn := make([]float64, n)
			sumDec := make([]float64, n)
			exact := exactFeedback(c.set)
			rounds := 30
			var msg []byte
			var before []float32
			for round := range rounds {
				delta := gaussian(n, 1e-2, uint64(round))
				before = append(before[:0], r.Error()...)
				if msg, err = r.Encode(msg[:0], delta); err != nil {
					t.Fatal(err)
				}
				d, err := c.Decode(nil, msg)
				if err != nil {
					t.Fatal(err)
				}
				e := r.Error()
				for i := range n {
					sumIn[i] += float64(delta[i])
					sumDec[i] += float64(d[i])
					if exact && d[i]+e[i] != before[i]+delta[i] {
						t.Fatalf("round %d value %d: decoded %g + residual %g != e+delta %g", round, i, d[i], e[i], before[i]+delta[i])
					}
				}
			}
			if r.Round() != uint64(rounds) {
				t.Fatalf("Round() = %d", r.Round())
			}
			e := r.Error()
			var worst float64
			for i := range n {
				worst = max(worst, math.Abs(sumDec[i]+float64(e[i])-sumIn[i]))
			}
			// Each round adds at most a few ulps of values of size ~0.1.
			if worst > float64(rounds)*1e-8 {
				t.Fatalf("Σ decoded + residual differs from Σ deltas by %g", worst)
			}
		})
	}
}

func TestConformanceNonFinite(t *testing.T) {
	for _, setting := range suite {
		t.Run(setting, func(t *testing.T) {
			n := 300
			c := newTestCodec(t, setting, n, 1)
			r, err := c.NewResidual(n)
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
				for _, at := range []int{0, 150, n - 1} {
					x := gaussian(n, 1, 2)
					x[at] = bad
					dst := []byte("keep")
					out, err := c.Encode(dst, x)
					if !errors.Is(err, ErrNonFinite) || !bytes.Equal(out, dst) {
						t.Fatalf("x[%d]=%v: Encode = %q, %v; want dst unchanged and ErrNonFinite", at, bad, out, err)
					}
					before := append([]float32(nil), r.Error()...)
					if _, err := r.Encode(nil, x); !errors.Is(err, ErrNonFinite) {
						t.Fatalf("Residual.Encode: %v, want ErrNonFinite", err)
					}
					for i, v := range r.Error() {
						if math.Float32bits(v) != math.Float32bits(before[i]) {
							t.Fatal("residual changed by a rejected Encode")
						}
					}
				}
				if _, err := r.Encode(nil, gaussian(n, 1, 3)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestConformanceMismatch(t *testing.T) {
	n := 500
	x := gaussian(n, 1, 1)
	for i, a := range suite {
		ca := newTestCodec(t, a, n, 1)
		msg, err := ca.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		b := suite[(i+1)%len(suite)]
		cb := newTestCodec(t, b, n, 1)
		if _, err := cb.Decode(nil, msg); !errors.Is(err, ErrSettingMismatch) {
			t.Errorf("%s message decoded by %s: %v, want ErrSettingMismatch", a, b, err)
		}
		// Same setting, another Shape.
		cfg := ca.Config()
		cfg.Shape = append(Shape{}, cfg.Shape...)
		if len(cfg.Shape) == 0 {
			cfg.Shape = Shape{{Offset: 1, Rows: 2, Cols: 2}}
		} else {
			cfg.Shape[0].Rows, cfg.Shape[0].Cols = cfg.Shape[0].Cols, cfg.Shape[0].Rows
		}
		cs, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.Decode(nil, msg); !errors.Is(err, ErrShapeMismatch) {
			t.Errorf("%s message decoded with another Shape: %v, want ErrShapeMismatch", a, err)
		}
	}
}

// TestConformanceHostile truncates and mutates valid messages of every
// setting: decoding must fail cleanly (never panic) or, for mutations that
// still form a valid message, return finite values.
func TestConformanceHostile(t *testing.T) {
	for _, setting := range suite {
		t.Run(setting, func(t *testing.T) {
			n := 200
			c := newTestCodec(t, setting, n, 1)
			msg, err := c.Encode(nil, heavy(n, 8))
			if err != nil {
				t.Fatal(err)
			}
			for l := range len(msg) {
				if _, err := c.Decode(nil, msg[:l]); err == nil {
					t.Fatalf("truncated to %d of %d bytes: decoded without error", l, len(msg))
				}
				if _, err := c.Decode(nil, recrc(append([]byte(nil), msg[:l]...))); err == nil && l < len(msg) {
					// A shorter payload is never a valid message of the same count.
					t.Fatalf("truncated to %d bytes with CRC fixed: decoded without error", l)
				}
			}
			if _, err := c.Decode(nil, append(append([]byte(nil), msg...), 0)); err == nil {
				t.Fatal("trailing byte accepted")
			}
			if _, err := c.Decode(nil, recrc(append(append([]byte(nil), msg...), 0))); err == nil {
				t.Fatal("trailing byte accepted with CRC fixed")
			}
			for i := range msg {
				for _, flip := range []byte{0x01, 0x80, 0xff} {
					m := append([]byte(nil), msg...)
					m[i] ^= flip
					if _, err := c.Decode(nil, m); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
						t.Fatalf("byte %d ^ %#x: %v, want ErrCorrupt or ErrVersion", i, flip, err)
					}
					d, err := c.Decode(nil, recrc(m))
					if err == nil {
						// A mutated count can still form a valid message.
						if h, _ := ReadHeader(recrc(m)); uint64(len(d)) != h.Count {
							t.Fatalf("byte %d ^ %#x (CRC fixed): %d values", i, flip, len(d))
						}
						if j := firstNonFinite(d); j >= 0 {
							t.Fatalf("byte %d ^ %#x (CRC fixed): value %d is %v", i, flip, j, d[j])
						}
					}
				}
			}
		})
	}
}

// TestHostileCases builds specific invalid messages (CRC fixed, so the
// payload checks are reached) and checks each error.
func TestHostileCases(t *testing.T) {
	enc := func(setting string, x []float32) (*Codec, []byte) {
		c := newTestCodec(t, setting, len(x), 1)
		m, err := c.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		return c, m
	}
	x := []float32{1, -2, 3, -4, 5, -6, 7, -8, 0.5, 0.25, 9, 10}
	type tc struct {
		name    string
		setting string
		mutate  func(m []byte) []byte // returns the message, CRC not yet fixed
		want    error
	}
	p := func(m []byte) int { return payloadOffset(m) }
	cases := []tc{
		{"bad magic", "fp32", func(m []byte) []byte { m[0] = 'X'; return m }, ErrCorrupt},
		{"version", "fp32", func(m []byte) []byte { m[4] = 2; return m }, ErrVersion},
		{"unknown setting", "fp32", func(m []byte) []byte { copy(m[6:], "fp99"); return m }, ErrSetting},
		{"other setting", "fp32", func(m []byte) []byte { copy(m[6:], "fp16"); return m }, ErrSettingMismatch},
		{"count too large", "fp32", func(m []byte) []byte { m[p(m)-20+2] = 1; return m }, ErrCorrupt},
		{"count above MaxElements", "fp32", func(m []byte) []byte { m[p(m)-20+7] = 1; return m }, ErrLength},
		{"fp32 NaN", "fp32", func(m []byte) []byte { copy(m[p(m):], []byte{0, 0, 0xc0, 0x7f}); return m }, ErrCorrupt},
		{"fp16 Inf", "fp16", func(m []byte) []byte { copy(m[p(m):], []byte{0, 0x7c}); return m }, ErrCorrupt},
		{"bf16 NaN", "bf16", func(m []byte) []byte { copy(m[p(m):], []byte{0xc0, 0x7f}); return m }, ErrCorrupt},
		{"q8 NaN scale", "q8/b8", func(m []byte) []byte { copy(m[p(m):], []byte{0, 0, 0xc0, 0x7f}); return m }, ErrCorrupt},
		{"q8 Inf scale", "q8/b8", func(m []byte) []byte { copy(m[p(m)+4:], []byte{0, 0, 0x80, 0x7f}); return m }, ErrCorrupt},
		{"q8 negative scale", "q8/b8", func(m []byte) []byte { m[p(m)+3] |= 0x80; return m }, ErrCorrupt},
		{"q8 code -128", "q8/b8", func(m []byte) []byte { m[p(m)+8] = 0x80; return m }, ErrCorrupt},
		{"q4 code 15", "q4/b8", func(m []byte) []byte { m[p(m)+8] |= 0x0f; return m }, ErrCorrupt},
		{"q2 code 3", "q2/b8", func(m []byte) []byte { m[p(m)+8] |= 0x03; return m }, ErrCorrupt},
		{"q4 padding", "q4/b8", func(m []byte) []byte { m = m[:len(m)-1]; return m }, ErrCorrupt},
		// topk:0.25/c8 of 12 values: chunk 0 (m=8, k=2, l=2) is byte 0: two
		// 2-bit low parts, then 4 upper bits; chunk 1 (m=4, k=1, l=2) is the low
		// nibble of byte 1: a 2-bit low part, 2 upper bits; 4 padding bits.
		{"topk index not increasing", "topk:0.25/c8", func(m []byte) []byte { m[p(m)] = 0b0011_01_11; return m }, ErrCorrupt},
		{"topk index repeated", "topk:0.25/c8", func(m []byte) []byte { m[p(m)] = 0b0011_11_11; return m }, ErrCorrupt},
		{"topk upper bit missing", "topk:0.25/c8", func(m []byte) []byte { m[p(m)] = 0b0001_01_00; return m }, ErrCorrupt},
		{"topk extra upper bit", "topk:0.25/c8", func(m []byte) []byte { m[p(m)] = 0b0111_01_00; return m }, ErrCorrupt},
		{"topk index out of short chunk", "topk:0.25/c8", func(m []byte) []byte { m[p(m)+1] = 0b10_00; return m }, ErrCorrupt},
		{"topk padding", "topk:0.25/c8", func(m []byte) []byte { m[p(m)+1] |= 0x80; return m }, ErrCorrupt},
		{"short payload", "q4", func(m []byte) []byte { return m[:len(m)-1] }, ErrCorrupt},
		{"long payload", "q4", func(m []byte) []byte { return append(m, 0) }, ErrCorrupt},
		{"zstd garbage", "q4+zstd", func(m []byte) []byte { return append(m[:p(m)], 1, 2, 3, 4, 5, 6, 7, 8) }, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, m := enc(tc.setting, x)
			if tc.name == "count above MaxElements" {
				var err error
				c, err = New(Config{Setting: c.Setting(), MaxElements: 1 << 20})
				if err != nil {
					t.Fatal(err)
				}
			}
			m = recrc(tc.mutate(m))
			_, err := c.Decode(nil, m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeLengthErrors(t *testing.T) {
	c, err := New(Config{Setting: MustParse("q8"), MaxElements: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encode(nil, make([]float32, 11)); !errors.Is(err, ErrLength) {
		t.Fatalf("11 values with MaxElements 10: %v", err)
	}
	c, err = New(Config{Setting: MustParse("lowrank:2"), Shape: Shape{{Offset: 0, Rows: 8, Cols: 8}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encode(nil, make([]float32, 63)); !errors.Is(err, ErrLength) {
		t.Fatalf("63 values with a 64-value Shape: %v", err)
	}
	r, err := c.NewResidual(64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Encode(nil, make([]float32, 65)); !errors.Is(err, ErrLength) {
		t.Fatalf("Residual of 64 given 65: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Setting: Setting{Sparsifier: LowRank, Rank: 4}},                             // no Shape
		{Setting: Setting{Format: Q4, Block: 12}},                                    // block not multiple of 8
		{Setting: Setting{Sparsifier: TopK, Fraction: 0}},                            // fraction 0
		{Setting: Setting{Sparsifier: TopK, Fraction: math.NaN()}},                   // NaN
		{Setting: Setting{Format: Q8, Clip: -1}},                                     // negative clip
		{Shape: Shape{{Offset: 0, Rows: 2, Cols: 2}, {Offset: 3, Rows: 1, Cols: 1}}}, // overlap
		{Shape: Shape{{Offset: 0, Rows: 0, Cols: 2}}},                                // empty segment
		{MaxElements: -1}, // negative
		{Shape: Shape{{Offset: 0, Rows: 4, Cols: 4}}, MaxElements: 8},                                            // shape too big
		{Setting: Setting{Format: numFormats}},                                                                   // unknown format
		{Setting: Setting{Sparsifier: LowRank, Rank: 2, Iters: 99}, Shape: Shape{{Offset: 0, Rows: 4, Cols: 4}}}, // iters
	}
	for i, cfg := range bad {
		if err := cfg.Validate(); err == nil {
			t.Errorf("config %d %+v: Validate accepted it", i, cfg)
		} else if !errors.Is(err, ErrSetting) && !errors.Is(err, ErrConfig) {
			t.Errorf("config %d: %v wraps neither ErrSetting nor ErrConfig", i, err)
		}
		if _, err := New(cfg); err == nil {
			t.Errorf("config %d: New accepted it", i)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}

// TestLowRankExact: a matrix of rank ≤ r is reconstructed (up to float32
// rounding) from one power iteration.
func TestLowRankExact(t *testing.T) {
	rows, cols, r := 40, 30, 3
	u, v := gaussian(rows*r, 1, 1), gaussian(cols*r, 1, 2)
	x := make([]float32, rows*cols+5)
	for i := range rows {
		for j := range cols {
			var s float32
			for c := range r {
				s += u[i*r+c] * v[j*r+c]
			}
			x[i*cols+j] = s
		}
	}
	copy(x[rows*cols:], []float32{1, 2, 3, 4, 5})
	for _, setting := range []string{"lowrank:3", "lowrank:4", "lowrank:3/i2"} {
		c, err := New(Config{Setting: MustParse(setting), Shape: Shape{{Offset: 0, Rows: rows, Cols: cols}}, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := c.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		d, err := c.Decode(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for i := range x {
			e := float64(x[i] - d[i])
			num += e * e
			den += float64(x[i]) * float64(x[i])
		}
		if rel := math.Sqrt(num / den); rel > 1e-5 {
			t.Errorf("%s: relative error %g on a rank-%d matrix", setting, rel, r)
		}
		if want := 4*(r*(rows+cols)) + 4*5; setting == "lowrank:3" && len(msg)-payloadOffset(msg) != want {
			t.Errorf("payload %d bytes, want %d", len(msg)-payloadOffset(msg), want)
		}
	}
}

// TestLowRankWarmStart: with error feedback, the warm-started power
// iteration drives the residual of a fixed rank-2 signal towards zero.
func TestLowRankWarmStart(t *testing.T) {
	rows, cols := 32, 24
	x := gaussian(rows*cols, 1, 5)
	c, err := New(Config{Setting: MustParse("lowrank:4"), Shape: Shape{{Offset: 0, Rows: rows, Cols: cols}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.NewResidual(rows * cols)
	if err != nil {
		t.Fatal(err)
	}
	norm := func(v []float32) (s float64) {
		for _, f := range v {
			s += float64(f) * float64(f)
		}
		return math.Sqrt(s)
	}
	// Send x once, then zeros: the residual must shrink as the factors
	// capture more of it.
	if _, err := r.Encode(nil, x); err != nil {
		t.Fatal(err)
	}
	first := norm(r.Error())
	zero := make([]float32, len(x))
	for range 20 {
		if _, err := r.Encode(nil, zero); err != nil {
			t.Fatal(err)
		}
	}
	if last := norm(r.Error()); !(last < first/10) {
		t.Fatalf("residual norm %g after 20 rounds, %g after the first", last, first)
	}
}

func ExampleResidual() {
	codec, err := New(Config{Setting: MustParse("topk:0.25/c8")})
	if err != nil {
		panic(err)
	}
	res, _ := codec.NewResidual(8)
	var msg []byte
	var total []float32
	for _, delta := range [][]float32{{1, 2, 3, 4, 5, 6, 7, 8}, {0, 0, 0, 0, 0, 0, 0, 0}} {
		msg, _ = res.Encode(msg[:0], delta) // the sender
		total, _ = codec.Decode(total[:0], msg)
		fmt.Println(len(msg), total, res.Error())
	}
	// Output:
	// 47 [0 0 0 0 0 0 7 8] [1 2 3 4 5 6 0 0]
	// 47 [0 0 0 0 5 6 0 0] [1 2 3 4 0 0 0 0]
}

// TestCompressionRatio pins the message sizes that low-bandwidth training
// depends on, on 2^20 Gaussian values: top-k 1 % with 4-bit values must be
// at least 100× smaller than fp32.
func TestCompressionRatio(t *testing.T) {
	n := 1 << 20
	x := gaussian(n, 1e-3, 1)
	for _, tc := range []struct {
		setting  string
		minRatio float64
	}{
		{"q8", 3.7}, {"q4", 7}, {"topk:0.01+q4", 200}, {"topk:0.01+q2", 240}, {"topk:0.001/c65536+q4", 1500}, {"lowrank:4+q8", 220},
	} {
		cfg := Config{Setting: MustParse(tc.setting)}
		if cfg.Setting.Sparsifier == LowRank {
			for off := 0; off < n; off += 1 << 18 {
				cfg.Shape = append(cfg.Shape, Segment{Offset: off, Rows: 512, Cols: 512})
			}
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := c.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		ratio := float64(4*n) / float64(len(msg))
		t.Logf("%-22s %8d bytes  %.4f bits/param  %.0f× smaller than fp32", tc.setting, len(msg), 8*float64(len(msg))/float64(n), ratio)
		if ratio < tc.minRatio {
			t.Errorf("%s: %.1f× smaller than fp32, want ≥ %.0f×", tc.setting, ratio, tc.minRatio)
		}
	}
}

// TestErrorFeedbackConverges: sending the same gradient g every round, the
// sum of what top-k 1 % + q4 delivers approaches R·g with error feedback
// (the residual stays bounded), and does not without it.
func TestErrorFeedbackConverges(t *testing.T) {
	n, rounds := 16384, 1000
	g := gaussian(n, 1, 11)
	c := newTestCodec(t, "topk:0.01+q4", n, 1)
	r, err := c.NewResidual(n)
	if err != nil {
		t.Fatal(err)
	}
	withEF := make([]float64, n)
	without := make([]float64, n)
	var msg []byte
	var d []float32
	for range rounds {
		if msg, err = r.Encode(msg[:0], g); err != nil {
			t.Fatal(err)
		}
		if d, err = c.Decode(d[:0], msg); err != nil {
			t.Fatal(err)
		}
		for i, v := range d {
			withEF[i] += float64(v)
		}
		if msg, err = c.Encode(msg[:0], g); err != nil {
			t.Fatal(err)
		}
		if d, err = c.Decode(d[:0], msg); err != nil {
			t.Fatal(err)
		}
		for i, v := range d {
			without[i] += float64(v)
		}
	}
	rel := func(sum []float64) float64 {
		var num, den float64
		for i := range sum {
			want := float64(rounds) * float64(g[i])
			num += (sum[i] - want) * (sum[i] - want)
			den += want * want
		}
		return math.Sqrt(num / den)
	}
	ef, no := rel(withEF), rel(without)
	t.Logf("after %d rounds: relative error of the delivered sum %.4f with error feedback, %.4f without", rounds, ef, no)
	if ef > 0.1 || no < 0.8 {
		t.Fatalf("relative error %.3f with error feedback (want ≤ 0.1), %.3f without (want ≥ 0.8)", ef, no)
	}
}

// TestZstdLossless: the zstd stage changes the bytes, never the values.
func TestZstdLossless(t *testing.T) {
	n := 30000
	x := heavy(n, 4)
	for _, base := range []string{"fp32", "q4", "topk:0.01+q4", "lowrank:4+q8", "q8/sr"} {
		a, z := newTestCodec(t, base, n, 3), newTestCodec(t, base+"+zstd", n, 3)
		ma, err := a.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		mz, err := z.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		da, err := a.Decode(nil, ma)
		if err != nil {
			t.Fatal(err)
		}
		dz, err := z.Decode(nil, mz)
		if err != nil {
			t.Fatal(err)
		}
		for i := range da {
			if math.Float32bits(da[i]) != math.Float32bits(dz[i]) {
				t.Fatalf("%s: value %d decodes to %g without zstd, %g with", base, i, da[i], dz[i])
			}
		}
		t.Logf("%-14s %7d bytes, +zstd %7d bytes", base, len(ma), len(mz))
	}
}
