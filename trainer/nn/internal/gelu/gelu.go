// Package gelu holds the loops of the GELU kernels (tanh approximation) of package nn and the
// rational tanh they use.
//
// On amd64 with AVX the loops run eight elements at a time (gelu_amd64.s), on the operations of
// the Go loops (ForwardGo, BackwardGo) in the same order and without fused multiply-adds. IEEE 754
// rounds each of them (multiplication, addition, subtraction, division, minimum and maximum)
// exactly, 8 at a time as one at a time, so both give the same bits on every machine
// (TestAsmMatchesGo). The Go loops run only without AVX, so on builds for GOAMD64 v1 or v2, where
// the compiler fuses no multiply-add either. They live in a package of their own because package
// nn uses cgo (OpenBLAS), and a cgo package cannot hold Go assembly.
package gelu

const (
	c = 0.7978845608028654 // √(2/π)
	a = 0.044715
)

// Clamp is where the rational tanh below reaches 1 in float32; it is evaluated on
// [−Clamp, Clamp] and is ±1 beyond.
const Clamp = 7.90531110763549805

// The rational approximation of tanh on [−Clamp, Clamp] (Eigen's generic_fast_tanh_float):
// x·P(x²)/Q(x²) with P of degree 6 and Q of degree 3 in x². Absolute and relative error below
// 4e-7 everywhere (TestTanh), against 1e-3 relative near 0 for 1 − 2/(e^{2x} + 1).
const (
	tanhP13 = -2.76076847742355e-16
	tanhP11 = 2.00018790482477e-13
	tanhP9  = -8.60467152213735e-11
	tanhP7  = 5.12229709037114e-08
	tanhP5  = 1.48572235717979e-05
	tanhP3  = 6.37261928875436e-04
	tanhP1  = 4.89352455891786e-03
	tanhQ6  = 1.19825839466702e-06
	tanhQ4  = 1.18534705686654e-04
	tanhQ2  = 2.26843463243900e-03
	tanhQ0  = 4.89352518554385e-03
)

// Tanh returns tanh(x): a rational function of x, odd, ±1 beyond ±Clamp, NaN for NaN. No
// exp, one division and no branch but the clamp, so a loop over it runs at the speed of its
// multiplications (ForwardGo and TanhOf write out the same expression).
func Tanh(x float32) float32 {
	if x > Clamp {
		x = Clamp
	} else if x < -Clamp {
		x = -Clamp
	}
	return rational(x)
}

// rational is the approximation on [−Clamp, Clamp], unclamped.
func rational(x float32) float32 {
	x2 := x * x
	p := tanhP13*x2 + tanhP11
	p = p*x2 + tanhP9
	p = p*x2 + tanhP7
	p = p*x2 + tanhP5
	p = p*x2 + tanhP3
	p = p*x2 + tanhP1
	q := tanhQ6*x2 + tanhQ4
	q = q*x2 + tanhQ2
	q = q*x2 + tanhQ0
	return x * p / q
}

// Forward writes gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) into out and, when th is
// not nil, tanh's values into th (the gradient needs them).
func Forward(out, th, x []float32) {
	if !useAsm {
		ForwardGo(out, th, x)
		return
	}
	out = out[:len(x)]
	if th != nil {
		th = th[:len(x)]
	}
	n8 := len(x) &^ 7
	if n8 > 0 {
		var tp *float32
		if th != nil {
			tp = &th[0]
		}
		forwardAVX(&out[0], tp, &x[0], n8, &vec)
	}
	if r := len(x) - n8; r > 0 { // the last 1–7 elements through the same loop, padded to 8
		var xb, ob, tb [8]float32
		copy(xb[:], x[n8:])
		forwardAVX(&ob[0], &tb[0], &xb[0], 8, &vec)
		copy(out[n8:], ob[:r])
		if th != nil {
			copy(th[n8:], tb[:r])
		}
	}
}

// Backward writes dy ⊙ gelu'(x) into out, from tanh's values th of the forward pass.
func Backward(out, x, th, dy []float32) {
	if !useAsm {
		BackwardGo(out, x, th, dy)
		return
	}
	out, th, dy = out[:len(x)], th[:len(x)], dy[:len(x)]
	n8 := len(x) &^ 7
	if n8 > 0 {
		backwardAVX(&out[0], &x[0], &th[0], &dy[0], n8, &vec)
	}
	if r := len(x) - n8; r > 0 {
		var ob, xb, tb, db [8]float32
		copy(xb[:], x[n8:])
		copy(tb[:], th[n8:])
		copy(db[:], dy[n8:])
		backwardAVX(&ob[0], &xb[0], &tb[0], &db[0], 8, &vec)
		copy(out[n8:], ob[:r])
	}
}

// The constants of the loops, in the order the AVX loops read them (gelu_amd64.s).
const (
	kA = iota
	kC
	kClamp
	kNegClamp
	kHalf
	kOne
	kP13
	kP11
	kP9
	kP7
	kP5
	kP3
	kP1
	kQ6
	kQ4
	kQ2
	kQ0
	k3A
	nk
)

// vec holds each constant of the loops 8 times, as the AVX loops load them.
var vec = func() (k [nk][8]float32) {
	v := [nk]float32{kA: a, kC: c, kClamp: Clamp, kNegClamp: -Clamp, kHalf: 0.5, kOne: 1,
		kP13: tanhP13, kP11: tanhP11, kP9: tanhP9, kP7: tanhP7, kP5: tanhP5, kP3: tanhP3, kP1: tanhP1,
		kQ6: tanhQ6, kQ4: tanhQ4, kQ2: tanhQ2, kQ0: tanhQ0, k3A: 3 * a}
	for i, x := range v {
		for j := range k[i] {
			k[i][j] = x
		}
	}
	return k
}()

// ForwardGo is Forward's loop in Go: TanhOf written out (the same bits), so that it compiles
// without calls.
func ForwardGo(out, th, x []float32) {
	out = out[:len(x)]
	if th != nil {
		th = th[:len(x)]
	}
	for i, v := range x {
		u := c * (v + a*v*v*v)
		if u > Clamp {
			u = Clamp
		} else if u < -Clamp {
			u = -Clamp
		}
		t := rational(u)
		if th != nil {
			th[i] = t
		}
		out[i] = 0.5 * v * (1 + t)
	}
}

// TanhOf is tanh(√(2/π)·(x + 0.044715·x³)), the tanh of gelu(x), by Tanh.
func TanhOf(x float32) float32 {
	u := c * (x + a*x*x*x)
	if u > Clamp {
		u = Clamp
	} else if u < -Clamp {
		u = -Clamp
	}
	return rational(u)
}

// BackwardGo is Backward's loop in Go.
func BackwardGo(out, x, th, dy []float32) {
	out, th, dy = out[:len(x)], th[:len(x)], dy[:len(x)]
	for i, v := range x {
		t := th[i]
		du := c * (1 + 3*a*v*v)
		out[i] = dy[i] * (0.5*(1+t) + 0.5*v*(1-t*t)*du)
	}
}
