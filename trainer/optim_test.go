package trainer

import (
	"math"
	"runtime"
	"testing"
)

func TestAdamWHandComputed(t *testing.T) {
	o, err := NewAdamW(2, AdamWConfig{LR: 0.1, WeightDecay: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	p := []float32{1, -2}
	g := []float32{0.5, -1}
	// Step 1: m̂ = g, v̂ = g², so the Adam direction is sign(g) (up to ε); decay adds wd·θ.
	o.Step(p, g)
	want := []float64{1 - 0.1*(1+0.01*1), -2 - 0.1*(-1+0.01*-2)}
	assertClose(t, "step 1", p, want, 1e-6)
	// Step 2 with the same gradient: bias correction keeps m̂ = g and v̂ = g² exactly.
	prev := []float64{float64(p[0]), float64(p[1])}
	o.Step(p, g)
	want = []float64{prev[0] - 0.1*(1+0.01*prev[0]), prev[1] - 0.1*(-1+0.01*prev[1])}
	assertClose(t, "step 2", p, want, 1e-6)
	if o.Steps() != 2 {
		t.Fatalf("Steps() = %d, want 2", o.Steps())
	}
}

func TestAdamWGeneralStep(t *testing.T) {
	// Different gradients per step, checked against a float64 reference of the documented loop.
	cfg := AdamWConfig{LR: 0.01, Beta1: 0.8, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.1}
	o, _ := NewAdamW(3, cfg)
	p := []float32{0.3, -0.7, 2}
	ref := []float64{0.3, -0.7, 2}
	m := make([]float64, 3)
	v := make([]float64, 3)
	grads := [][]float32{{0.1, 0.2, -0.3}, {-0.5, 0.05, 0.4}, {0.2, -0.1, 0}}
	for step, g := range grads {
		o.Step(p, g)
		tt := float64(step + 1)
		for i := range ref {
			gi := float64(g[i])
			m[i] = 0.8*m[i] + 0.2*gi
			v[i] = 0.95*v[i] + 0.05*gi*gi
			mh := m[i] / (1 - math.Pow(0.8, tt))
			vh := v[i] / (1 - math.Pow(0.95, tt))
			ref[i] -= 0.01 * (mh/(math.Sqrt(vh)+1e-6) + 0.1*ref[i])
		}
		assertClose(t, "general", p, ref, 1e-6)
	}
}

func TestNesterovHandComputed(t *testing.T) {
	o, err := NewNesterov(1, OuterConfig{}) // defaults η = 0.7, μ = 0.9
	if err != nil {
		t.Fatal(err)
	}
	p := []float32{1}
	o.Step(p, []float32{0.1}) // v = 0.1; θ = 1 − 0.7·(0.1 + 0.09)
	assertClose(t, "step 1", p, []float64{0.867}, 1e-6)
	o.Step(p, []float32{0.1}) // v = 0.19; θ −= 0.7·(0.1 + 0.171)
	assertClose(t, "step 2", p, []float64{0.867 - 0.7*0.271}, 1e-6)
	if got := o.Momentum()[0]; math.Abs(float64(got)-0.19) > 1e-7 {
		t.Fatalf("momentum = %v, want 0.19", got)
	}
}

func TestNesterovWithUnitLRAndNoMomentumIsFedAvg(t *testing.T) {
	// η = 1, μ = 0 makes the outer step θ − Δ = the average of the local models (FedAvg).
	o, err := NewNesterov(2, OuterConfig{LR: 1, Momentum: 0})
	if err != nil {
		t.Fatal(err)
	}
	theta := []float32{1, 2}
	local := []float32{0.5, 2.5}
	delta := []float32{theta[0] - local[0], theta[1] - local[1]}
	o.Step(theta, delta)
	assertClose(t, "fedavg", theta, []float64{0.5, 2.5}, 1e-7)
}

// TestNesterovZeroMomentumIsNone: μ = 0 is a setting (no momentum), not "the default": the
// momentum buffer is only Δ and the step is η·Δ.
func TestNesterovZeroMomentumIsNone(t *testing.T) {
	o, err := NewNesterov(1, OuterConfig{LR: 0.5, Momentum: 0})
	if err != nil {
		t.Fatal(err)
	}
	p := []float32{1}
	o.Step(p, []float32{0.2})
	o.Step(p, []float32{0.2})
	assertClose(t, "two steps without momentum", p, []float64{1 - 2*0.5*0.2}, 1e-7)
}

func TestOptimizerConfigValidation(t *testing.T) {
	bad := []AdamWConfig{{LR: -1}, {Beta1: 1}, {Beta2: 1.5}, {Eps: -1}, {WeightDecay: -0.1}, {LR: float32(math.Inf(1))}}
	for _, c := range bad {
		if _, err := NewAdamW(1, c); err == nil {
			t.Errorf("NewAdamW(%+v) accepted a bad config", c)
		}
	}
	for _, c := range []OuterConfig{{LR: -0.1}, {LR: 1, Momentum: 1}, {LR: 1, Momentum: -0.5}, {Momentum: 0.5}} {
		if _, err := NewNesterov(1, c); err == nil {
			t.Errorf("NewNesterov(%+v) accepted a bad config", c)
		}
	}
}

func TestAverageWeightedFixedOrder(t *testing.T) {
	xs := [][]float32{{1, 2}, {3, 4}, {5, 6}}
	got, err := Average(nil, xs, []float64{1, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, "average", got, []float64{(1 + 3 + 10) / 4.0, (2 + 4 + 12) / 4.0}, 1e-6)
	again, _ := Average(nil, xs, []float64{1, 1, 2})
	if ParamsHash(got) != ParamsHash(again) {
		t.Fatal("Average is not bit-reproducible")
	}
	for _, tc := range []struct {
		name string
		xs   [][]float32
		w    []float64
	}{
		{"empty", nil, nil},
		{"weights", xs, []float64{1}},
		{"ragged", [][]float32{{1}, {1, 2}}, []float64{1, 1}},
		{"zero weight", xs, []float64{1, 0, 1}},
		{"nan weight", xs, []float64{1, math.NaN(), 1}},
	} {
		if _, err := Average(nil, tc.xs, tc.w); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func assertClose(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, want %d", what, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i]) - want[i]); d > tol*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("%s: [%d] = %.9g, want %.9g (|diff| %.3g)", what, i, got[i], want[i], d)
		}
	}
}

// TestLRSchedule: the warm-up rises linearly to the peak (nanoGPT's (s+1)/(warmup+1)), the cosine
// falls from the peak after the warm-up to the floor at DecaySteps and holds it, and a constant
// schedule stays at the peak.
func TestLRSchedule(t *testing.T) {
	cos := AdamWConfig{LR: 1e-3, Warmup: 9, DecaySteps: 109}
	constant := AdamWConfig{LR: 1e-3, Warmup: 4}
	for _, tc := range []struct {
		name string
		cfg  AdamWConfig
		step int
		want float64
	}{
		{"warm-up first step", cos, 0, 1e-4},
		{"warm-up middle", cos, 4, 5e-4},
		{"warm-up last step", cos, 8, 9e-4},
		{"peak after the warm-up", cos, 9, 1e-3},
		{"half way down the cosine", cos, 59, 1e-4 + 0.5*9e-4},
		{"the floor at DecaySteps", cos, 109, 1e-4},
		{"the floor after it", cos, 10_000, 1e-4},
		{"a negative step is the first", cos, -5, 1e-4},
		{"constant after its warm-up", constant, 4, 1e-3},
		{"constant long after", constant, 1 << 30, 1e-3},
		{"the default floor is lr/10", AdamWConfig{LR: 1e-3, DecaySteps: 10}, 10, 1e-4},
		{"a low floor", AdamWConfig{LR: 2e-3, DecaySteps: 10, MinLR: 1e-9}, 5, 1e-3},
	} {
		if got := float64(tc.cfg.LRAt(tc.step)); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: LRAt(%d) = %v, want %v", tc.name, tc.step, got, tc.want)
		}
	}
	for _, bad := range []AdamWConfig{{Warmup: -1}, {DecaySteps: -1}, {DecaySteps: 10, MinLR: 1}, {ClipNorm: -1},
		{ClipNorm: float32(math.Inf(1))}, {WeightDecay: float32(math.NaN())}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// TestClipGradNorm: a gradient above the norm is scaled down to it (torch's clip_grad_norm_), one
// below it is untouched, and the norm before clipping is returned.
func TestClipGradNorm(t *testing.T) {
	g := []float32{3, 4}
	if n := ClipGradNorm(g, 1); n != 5 {
		t.Fatalf("norm %v, want 5", n)
	}
	assertClose(t, "clipped", g, []float64{0.6, 0.8}, 1e-6)
	g = []float32{0.3, 0.4}
	ClipGradNorm(g, 1)
	assertClose(t, "below the norm", g, []float64{0.3, 0.4}, 1e-7)
	g = []float32{30, 40}
	ClipGradNorm(g, 0)
	assertClose(t, "no clipping", g, []float64{30, 40}, 0)
	// In AdamW: a clipped step moves the parameters as the clipped gradient would.
	a, _ := NewAdamW(2, AdamWConfig{LR: 0.1, ClipNorm: 1, Beta2: 0.5})
	b, _ := NewAdamW(2, AdamWConfig{LR: 0.1, Beta2: 0.5})
	pa, pb := []float32{1, 1}, []float32{1, 1}
	a.Step(pa, []float32{3, 4})
	a.Step(pa, []float32{-30, 0})
	b.Step(pb, []float32{0.6, 0.8})
	b.Step(pb, []float32{-1, 0})
	assertClose(t, "clipped AdamW", pa, []float64{float64(pb[0]), float64(pb[1])}, 1e-6)
}

// TestGradNormAccumulators: GradNorm is the sum of squares on eight accumulators (element i on
// accumulator i mod 8, in index order) combined as ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)), bit for bit,
// for lengths around the unrolled loop's edges, and within float64 rounding of the exact norm.
func TestGradNormAccumulators(t *testing.T) {
	ref := func(g []float32) float64 {
		var s [8]float64
		for i, x := range g {
			s[i%8] += float64(x) * float64(x)
		}
		return math.Sqrt(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])))
	}
	for _, tc := range []struct {
		name string
		n    int
	}{{"empty", 0}, {"one", 1}, {"seven", 7}, {"eight", 8}, {"nine", 9}, {"fifteen", 15}, {"sixteen", 16}, {"long", 100_003}} {
		t.Run(tc.name, func(t *testing.T) {
			g := make([]float32, tc.n)
			var exact float64 // a single chain, for the accuracy check
			for i := range g {
				g[i] = float32(math.Sin(float64(i)*0.7)) * float32(1+i%5)
				exact += float64(g[i]) * float64(g[i])
			}
			exact = math.Sqrt(exact)
			got := GradNorm(g)
			if want := ref(g); math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("GradNorm %v, want %v (the eight accumulators' sum)", got, want)
			}
			if d := math.Abs(got - exact); d > 1e-12*exact {
				t.Fatalf("GradNorm %v, single chain %v", got, exact)
			}
		})
	}
	if n := GradNorm([]float32{3, 4}); n != 5 {
		t.Fatalf("GradNorm(3, 4) = %v, want 5", n)
	}
}

// TestWorkerSeekStep: a worker's learning rate follows the cohort step it is told, not its own
// count: a late joiner seeking to step s takes exactly the step a worker that trained from 0 takes
// at s.
func TestWorkerSeekStep(t *testing.T) {
	cfg := AdamWConfig{LR: 1e-2, Warmup: 10, DecaySteps: 40}
	mk := func() *Worker {
		task, _, err := BuildTask(TaskSpec{Model: "mlp:784-8-10", Workers: 1, DataDir: EmbeddedData, Batch: 4, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		m, err := task.NewModel(1)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWorker(m, task.Sources[0], WorkerConfig{Inner: cfg})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := mk()
	st, err := w.InnerSteps(25)
	if err != nil {
		t.Fatal(err)
	}
	if st.LR != cfg.LRAt(24) || w.Step() != 25 {
		t.Fatalf("after 25 steps: lr %v at step %d, want %v at 25", st.LR, w.Step(), cfg.LRAt(24))
	}
	late := mk()
	late.SeekStep(30)
	if st, err = late.InnerSteps(1); err != nil {
		t.Fatal(err)
	}
	if st.LR != cfg.LRAt(30) || st.LR == cfg.LRAt(0) {
		t.Fatalf("a worker sought to step 30 trained at lr %v, want %v", st.LR, cfg.LRAt(30))
	}
}

// TestAdamWIndependentOfGOMAXPROCS: the update runs on every core, with the same bits on any number.
func TestAdamWIndependentOfGOMAXPROCS(t *testing.T) {
	const n = 100_003
	var first []float32
	for _, procs := range []int{1, 2, 3} {
		old := runtime.GOMAXPROCS(procs)
		o, err := NewAdamW(n, AdamWConfig{LR: 1e-2, WeightDecay: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		p, g := make([]float32, n), make([]float32, n)
		for i := range p {
			p[i], g[i] = float32(i%17)*0.1, float32(i%13)*0.01-0.05
		}
		for range 3 {
			o.Step(p, g)
		}
		runtime.GOMAXPROCS(old)
		if first == nil {
			first = p
			continue
		}
		for i := range p {
			if math.Float32bits(p[i]) != math.Float32bits(first[i]) {
				t.Fatalf("GOMAXPROCS %d: parameter %d is %v, %v with 1", procs, i, p[i], first[i])
			}
		}
	}
}

// TestAdamWMatchesReferenceLoop: the step, on the AVX loop where the CPU has AVX and on the Go
// loop, is bit for bit the documented reference loop with its flushes written as float
// comparisons, on ordinary values and on the edges of the flushes (±1e-15, ±1e-30, subnormals,
// zeros, infinities, NaN).
func TestAdamWMatchesReferenceLoop(t *testing.T) {
	for _, asm := range []bool{true, false} {
		if asm && !adamwAsm {
			continue
		}
		t.Run(map[bool]string{true: "avx", false: "go"}[asm], func(t *testing.T) {
			old := adamwAsm
			adamwAsm = asm
			defer func() { adamwAsm = old }()
			testAdamWMatchesReferenceLoop(t)
		})
	}
}

func testAdamWMatchesReferenceLoop(t *testing.T) {
	edges := []float32{0, float32(math.Copysign(0, -1)), 1e-15, -1e-15, math.Nextafter32(1e-15, 0), -math.Nextafter32(1e-15, 0),
		1e-30, -1e-30, math.Nextafter32(1e-30, 0), math.Nextafter32(1e-30, 1), 1e-40, -1e-40, 1e-20, -3e-16,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0.5, -2, 1e-3}
	const n = 4003 // not a multiple of 8: the AVX loop's padded tail too
	g, p := make([]float32, n), make([]float32, n)
	for i := range g {
		g[i] = edges[i%len(edges)]
		if i >= 2*len(edges) {
			g[i] *= float32(i%7) - 3
		}
		p[i] = float32(i%11)*0.1 - 0.5
	}
	cfg := AdamWConfig{LR: 1e-2, WeightDecay: 0.1}.withDefaults()
	o, err := NewAdamW(n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rp, rm, rv := append([]float32(nil), p...), make([]float32, n), make([]float32, n)
	for step := 1; step <= 3; step++ {
		o.Step(p, g)
		bc1 := float32(1 - math.Pow(float64(cfg.Beta1), float64(step)))
		bc2 := float32(1 - math.Pow(float64(cfg.Beta2), float64(step)))
		inv1, inv2 := 1/bc1, 1/bc2
		for i := range rp {
			gi := g[i]
			var g2 float32
			if gi >= 1e-15 || gi <= -1e-15 {
				g2 = gi * gi
			} else if gi < 1e-30 && gi > -1e-30 {
				gi = 0
			}
			mi := cfg.Beta1*rm[i] + (1-cfg.Beta1)*gi
			vi := cfg.Beta2*rv[i] + (1-cfg.Beta2)*g2
			if mi < 1e-30 && mi > -1e-30 {
				mi = 0
			}
			if vi < 1e-30 {
				vi = 0
			}
			rm[i], rv[i] = mi, vi
			mh, vh := mi*inv1, vi*inv2
			rp[i] -= cfg.LR * (mh/(float32(math.Sqrt(float64(vh)))+cfg.Eps) + cfg.WeightDecay*rp[i])
		}
		m, v, _ := o.State()
		for i := range rp {
			for _, c := range []struct {
				what      string
				got, want float32
			}{{"parameter", p[i], rp[i]}, {"m", m[i], rm[i]}, {"v", v[i], rv[i]}} {
				if math.Float32bits(c.got) != math.Float32bits(c.want) {
					t.Fatalf("step %d, %s %d (gradient %v): %v, reference %v", step, c.what, i, g[i], c.got, c.want)
				}
			}
		}
	}
}
