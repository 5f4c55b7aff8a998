package trainer

import (
	"fmt"
	"math"

	"github.com/cohortlab/cohort/internal/par"
	"github.com/viterin/vek/vek32"
)

// AdamWConfig configures the inner optimizer. The zero value of each field means the default shown.
type AdamWConfig struct {
	LR          float32 // peak learning rate; default 1e-3
	Beta1       float32 // first-moment decay; default 0.9
	Beta2       float32 // second-moment decay; default 0.999
	Eps         float32 // denominator epsilon; default 1e-8
	WeightDecay float32 // decoupled weight decay (AdamW); default 0 (set a value to enable)
	// Warmup is the number of steps over which the learning rate rises linearly to LR
	// (LR·(s+1)/(Warmup+1) at step s, as nanoGPT does); 0: none.
	Warmup int
	// DecaySteps, if positive, decays the learning rate from LR after the warm-up to MinLR at
	// step DecaySteps along a half cosine, and holds MinLR after it; 0: a constant LR.
	DecaySteps int
	// MinLR is the floor of the cosine decay; default LR/10 (nanoGPT's). Unused without DecaySteps.
	MinLR float32
	// ClipNorm, if positive, scales every gradient whose global L2 norm exceeds it down to that
	// norm before the step; 0: no clipping.
	ClipNorm float32
}

func (c AdamWConfig) withDefaults() AdamWConfig {
	if c.LR == 0 {
		c.LR = 1e-3
	}
	if c.Beta1 == 0 {
		c.Beta1 = 0.9
	}
	if c.Beta2 == 0 {
		c.Beta2 = 0.999
	}
	if c.Eps == 0 {
		c.Eps = 1e-8
	}
	if c.MinLR == 0 && c.DecaySteps > 0 {
		c.MinLR = c.LR / 10
	}
	return c
}

// LRAt is the learning rate at step s (0-based) of the schedule: the linear warm-up, then the
// cosine decay to MinLR at DecaySteps, or LR throughout. It depends on s alone, so every peer of a
// cohort at the same step of the cohort's timeline uses the same rate.
func (c AdamWConfig) LRAt(s int) float32 {
	c = c.withDefaults()
	if s < 0 {
		s = 0
	}
	if s < c.Warmup {
		return float32(float64(c.LR) * float64(s+1) / float64(c.Warmup+1))
	}
	if c.DecaySteps <= 0 {
		return c.LR
	}
	if s >= c.DecaySteps {
		return c.MinLR
	}
	span := c.DecaySteps - c.Warmup
	if span <= 0 {
		return c.MinLR
	}
	ratio := float64(s-c.Warmup) / float64(span)
	coeff := 0.5 * (1 + math.Cos(math.Pi*ratio))
	return float32(float64(c.MinLR) + coeff*float64(c.LR-c.MinLR))
}

// Validate reports a configuration that cannot train.
func (c AdamWConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case !(c.LR > 0) || math.IsInf(float64(c.LR), 0):
		return fmt.Errorf("adamw: learning rate %v must be positive and finite", c.LR)
	case !(c.Beta1 > 0 && c.Beta1 < 1), !(c.Beta2 > 0 && c.Beta2 < 1):
		return fmt.Errorf("adamw: betas (%v, %v) must lie in (0, 1)", c.Beta1, c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("adamw: eps %v must be positive", c.Eps)
	case !(c.WeightDecay >= 0) || math.IsInf(float64(c.WeightDecay), 0):
		return fmt.Errorf("adamw: weight decay %v must be ≥ 0 and finite", c.WeightDecay)
	case c.Warmup < 0 || c.DecaySteps < 0:
		return fmt.Errorf("adamw: warm-up %d and decay steps %d must be ≥ 0", c.Warmup, c.DecaySteps)
	case c.DecaySteps > 0 && !(c.MinLR >= 0 && c.MinLR <= c.LR):
		return fmt.Errorf("adamw: minimum learning rate %v must lie in [0, %v]", c.MinLR, c.LR)
	case !(c.ClipNorm >= 0) || math.IsInf(float64(c.ClipNorm), 0):
		return fmt.Errorf("adamw: gradient clip norm %v must be ≥ 0 and finite (0: none)", c.ClipNorm)
	}
	return nil
}

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter), in place on a flat vector.
//
// Reference loop, for every i, with step count t starting at 1:
//
//	m[i] = β1·m[i] + (1−β1)·g[i]
//	v[i] = β2·v[i] + (1−β2)·g[i]²
//	θ[i] -= lr·( (m[i]/(1−β1ᵗ)) / (√(v[i]/(1−β2ᵗ)) + ε) + wd·θ[i] )
//
// Moments smaller than 1e-30 are flushed to zero, and so are gradients and squared gradients
// below 1e-30: subnormal floats are slow on x86 (a step over a model that has nearly fitted its
// batch ran 6× slower) and carry no information at these scales. All arithmetic is float32 in a fixed order, so the same inputs give
// bit-identical outputs.
type AdamW struct {
	cfg  AdamWConfig
	m, v []float32
	t    int
}

// NewAdamW returns an optimizer for n parameters.
func NewAdamW(n int, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &AdamW{cfg: cfg.withDefaults(), m: make([]float32, n), v: make([]float32, n)}, nil
}

// Steps is the number of steps taken so far.
func (o *AdamW) Steps() int { return o.t }

// Step updates params in place from grad at the schedule's step Steps() (this optimizer's own
// count): StepAt(params, grad, o.Steps()).
func (o *AdamW) Step(params, grad []float32) float32 { return o.StepAt(params, grad, o.t) }

// StepAt updates params in place from grad with the learning rate of schedule step s
// (AdamWConfig.LRAt); the bias corrections follow this optimizer's own step count. With
// ClipNorm set, grad is first scaled in place down to that norm if its norm exceeds it. It
// returns the gradient's global L2 norm before clipping.
func (o *AdamW) StepAt(params, grad []float32, s int) float32 {
	if len(params) != len(o.m) || len(grad) != len(o.m) {
		panic(fmt.Sprintf("trainer: AdamW.Step lengths params=%d grad=%d, want %d", len(params), len(grad), len(o.m)))
	}
	norm := ClipGradNorm(grad, o.cfg.ClipNorm)
	o.t++
	c := o.cfg
	bc1 := float32(1 - math.Pow(float64(c.Beta1), float64(o.t)))
	bc2 := float32(1 - math.Pow(float64(c.Beta2), float64(o.t)))
	b1, b2 := c.Beta1, c.Beta2
	nb1, nb2 := 1-b1, 1-b2
	lr, wd, eps := c.LRAt(s), c.WeightDecay, c.Eps
	inv1 := 1 / bc1
	inv2 := 1 / bc2
	k := adamwStep{b1: b1, b2: b2, nb1: nb1, nb2: nb2, inv1: inv1, inv2: inv2, lr: lr, wd: wd, eps: eps}
	m, v := o.m[:len(params)], o.v[:len(params)]
	grad = grad[:len(params)]
	// Each element's update depends on that element alone: runs of adamwRun elements go to every
	// core, with the same results on any number of them.
	par.Runs(len(params), adamwRun, func(lo, hi int) { k.run(params[lo:hi], grad[lo:hi], m[lo:hi], v[lo:hi]) })
	return norm
}

// adamwStep holds the coefficients of one AdamW step.
type adamwStep struct{ b1, b2, nb1, nb2, inv1, inv2, lr, wd, eps float32 }

// tiny15 and tiny30 are the bits of float32 1e-15 and 1e-30, infBits those of +Inf: for a float32
// x with b = Float32bits(x)&^signBit, |x| ≥ 1e-15 (NaN excluded) is tiny15 ≤ b ≤ infBits, and
// |x| < 1e-30 is b < tiny30.
var (
	tiny15 = math.Float32bits(1e-15)
	tiny30 = math.Float32bits(1e-30)
)

const (
	infBits = 0x7f800000
	signBit = 1 << 31
)

// The constants of adamwAVX, in the order it reads them (optim_amd64.s).
const (
	adamwKAbs = iota // the bits clearing the sign
	adamwK15
	adamwK30
	adamwKB1
	adamwKNB1
	adamwKB2
	adamwKNB2
	adamwKInv1
	adamwKInv2
	adamwKLR
	adamwKWD
	adamwKEps
	adamwNK
)

// run updates params, m and v (all of len(params)) in place from grad: runGo's loop, on AVX where
// the CPU has it (adamwAsm), the last 1–7 elements through the same loop, padded to 8.
func (k adamwStep) run(params, grad, m, v []float32) {
	if !adamwAsm {
		k.runGo(params, grad, m, v)
		return
	}
	grad, m, v = grad[:len(params)], m[:len(params)], v[:len(params)]
	var kv [adamwNK][8]float32
	for i, c := range [adamwNK]float32{adamwKAbs: math.Float32frombits(^uint32(signBit)), adamwK15: 1e-15, adamwK30: 1e-30,
		adamwKB1: k.b1, adamwKNB1: k.nb1, adamwKB2: k.b2, adamwKNB2: k.nb2, adamwKInv1: k.inv1, adamwKInv2: k.inv2,
		adamwKLR: k.lr, adamwKWD: k.wd, adamwKEps: k.eps} {
		for j := range kv[i] {
			kv[i][j] = c
		}
	}
	n8 := len(params) &^ 7
	if n8 > 0 {
		adamwAVX(&params[0], &grad[0], &m[0], &v[0], n8, &kv)
	}
	if r := len(params) - n8; r > 0 {
		var pb, gb, mb, vb [8]float32
		copy(pb[:], params[n8:])
		copy(gb[:], grad[n8:])
		copy(mb[:], m[n8:])
		copy(vb[:], v[n8:])
		adamwAVX(&pb[0], &gb[0], &mb[0], &vb[0], 8, &kv)
		copy(params[n8:], pb[:r])
		copy(m[n8:], mb[:r])
		copy(v[n8:], vb[:r])
	}
}

// runGo updates params, m and v (all of len(params)) in place from grad, element by element in
// index order: the reference loop on AdamW, with gradients, moments and squared gradients of
// magnitude below 1e-30 flushed to zero (g² is not computed below 1e-15: it may be subnormal).
// The magnitude tests compare bits, which is cheaper than two float comparisons and gives the
// same result for every value, NaN included.
func (k adamwStep) runGo(params, grad, m, v []float32) {
	grad, m, v = grad[:len(params)], m[:len(params)], v[:len(params)]
	t15, t30 := tiny15, tiny30
	for i, p := range params {
		g := grad[i]
		var g2 float32
		if ab := math.Float32bits(g) &^ signBit; ab-t15 <= infBits-t15 { // unsigned: t15 ≤ ab ≤ infBits
			g2 = g * g
		} else if ab < t30 {
			g = 0
		}
		mi := k.b1*m[i] + k.nb1*g
		vi := k.b2*v[i] + k.nb2*g2
		if math.Float32bits(mi)&^signBit < t30 {
			mi = 0
		}
		if vi < 1e-30 {
			vi = 0
		}
		m[i], v[i] = mi, vi
		mh := mi * k.inv1
		vh := vi * k.inv2
		params[i] = p - k.lr*(mh/(float32(math.Sqrt(float64(vh)))+k.eps)+k.wd*p)
	}
}

// adamwRun is the number of parameters one goroutine updates at a time.
const adamwRun = 1 << 15

// GradNorm is the global L2 norm of g: its squares summed in float64 on eight accumulators,
// element i on accumulator i mod 8, each in index order, and the eight combined pairwise in a
// fixed order, ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)). Eight independent addition chains do not
// wait on each other's latency as a single chain does. The grouping depends only on len(g), so
// the result is the same bits for the same g on every machine and any number of cores (its last
// bits differ from a single sum's). Each square of a float32 is exact in float64.
func GradNorm(g []float32) float64 {
	var s0, s1, s2, s3, s4, s5, s6, s7 float64
	i := 0
	for ; i+8 <= len(g); i += 8 {
		b := g[i : i+8 : i+8]
		x0, x1, x2, x3 := float64(b[0]), float64(b[1]), float64(b[2]), float64(b[3])
		x4, x5, x6, x7 := float64(b[4]), float64(b[5]), float64(b[6]), float64(b[7])
		s0 += x0 * x0
		s1 += x1 * x1
		s2 += x2 * x2
		s3 += x3 * x3
		s4 += x4 * x4
		s5 += x5 * x5
		s6 += x6 * x6
		s7 += x7 * x7
	}
	var tail [8]float64
	for j, x := range g[i:] {
		tail[j] = float64(x) * float64(x)
	}
	s0, s1, s2, s3 = s0+tail[0], s1+tail[1], s2+tail[2], s3+tail[3]
	s4, s5, s6, s7 = s4+tail[4], s5+tail[5], s6+tail[6], s7+tail[7]
	return math.Sqrt(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
}

// ClipGradNorm scales g in place so that its global L2 norm is at most max (torch's
// clip_grad_norm_: g·max/(‖g‖+1e-6) when ‖g‖ > max) and returns the norm before clipping. A max
// of 0 clips nothing.
func ClipGradNorm(g []float32, max float32) float32 {
	norm := GradNorm(g)
	if max > 0 && norm > float64(max) {
		scale := float32(float64(max) / (norm + 1e-6))
		vek32.MulNumber_Inplace(g, scale) // exact float32 products, 8 at a time on AVX2
	}
	return float32(norm)
}

// State returns copies of the moment vectors and the step count (for checkpoints).
func (o *AdamW) State() (m, v []float32, t int) {
	return append([]float32(nil), o.m...), append([]float32(nil), o.v...), o.t
}

// Moments are the live moment vectors (read only): what a checkpoint writes without a copy.
func (o *AdamW) Moments() (m, v []float32) { return o.m, o.v }

// SetState restores the moment vectors and the step count a checkpoint saved.
func (o *AdamW) SetState(m, v []float32, t int) error {
	if len(m) != len(o.m) || len(v) != len(o.v) || t < 0 {
		return fmt.Errorf("adamw: state of %d/%d values (step %d) for %d parameters", len(m), len(v), t, len(o.m))
	}
	copy(o.m, m)
	copy(o.v, v)
	o.t = t
	return nil
}

// OuterConfig configures the DiLoCo outer optimizer. Zero values mean the defaults shown.
type OuterConfig struct {
	LR       float32 // outer learning rate η; must be positive
	Momentum float32 // Nesterov momentum μ in [0, 1); 0 is plain SGD on Δ
}

// DefaultOuter is the DiLoCo paper's outer step (η = 0.7, μ = 0.9): what the zero OuterConfig
// means. Only the whole zero value does: OuterConfig{LR: 1} has no momentum.
var DefaultOuter = OuterConfig{LR: 0.7, Momentum: 0.9}

func (c OuterConfig) withDefaults() OuterConfig {
	if c == (OuterConfig{}) {
		return DefaultOuter
	}
	return c
}

// Validate reports a configuration that cannot train.
func (c OuterConfig) Validate() error {
	c = c.withDefaults()
	if !(c.LR > 0) || math.IsInf(float64(c.LR), 0) {
		return fmt.Errorf("outer: learning rate %v must be positive and finite", c.LR)
	}
	if !(c.Momentum >= 0 && c.Momentum < 1) {
		return fmt.Errorf("outer: momentum %v must lie in [0, 1)", c.Momentum)
	}
	return nil
}

// Nesterov is the DiLoCo outer optimizer: SGD with Nesterov momentum applied to the averaged
// pseudo-gradient Δ.
//
// Reference loop, for every i:
//
//	v[i] = μ·v[i] + Δ[i]
//	θ[i] -= η·(Δ[i] + μ·v[i])
//
// Every replica applying the same Δ to the same (θ, v) gets bit-identical results.
type Nesterov struct {
	cfg OuterConfig
	v   []float32
}

// NewNesterov returns an outer optimizer for n parameters.
func NewNesterov(n int, cfg OuterConfig) (*Nesterov, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Nesterov{cfg: cfg.withDefaults(), v: make([]float32, n)}, nil
}

// Step applies the averaged pseudo-gradient delta to params in place.
func (o *Nesterov) Step(params, delta []float32) {
	if len(params) != len(o.v) || len(delta) != len(o.v) {
		panic(fmt.Sprintf("trainer: Nesterov.Step lengths params=%d delta=%d, want %d", len(params), len(delta), len(o.v)))
	}
	mu, lr := o.cfg.Momentum, o.cfg.LR
	v := o.v[:len(params)]
	delta = delta[:len(params)]
	for i, d := range delta {
		vi := mu*v[i] + d
		v[i] = vi
		params[i] -= lr * (d + mu*vi)
	}
}

// Momentum returns the live momentum buffer (a late joiner copies it together with θ).
func (o *Nesterov) Momentum() []float32 { return o.v }
