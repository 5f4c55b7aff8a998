package compress

import "fmt"

// Residual is the sender's error-feedback state for one vector (or one slice
// of it): the error e of what has not been transmitted yet. Each Encode does
//
//	e += delta; msg = C(e); e -= Decode(msg)
//
// so nothing is lost over rounds: Σ decoded messages + e = Σ deltas, up to
// float32 rounding of the additions (exactly, per round, for codecs whose
// decoded value d of each e satisfies e/2 ≤ d ≤ 2e or d = 0 — fp32, fp16,
// bf16, top-k of those, deterministic q8/q4/q2 within their range —, by
// Sterbenz's lemma; stochastic rounding, q1 and low-rank lose at most an ulp of
// e per round).
//
// The message of round t is encoded with seed SplitMix64(Config.Seed ^
// (t+1)·φ) so stochastic rounding draws fresh noise each round, and a
// low-rank codec warm-starts its power iteration from the previous round's Q
// (as in PowerSGD). Residual uses its Codec's scratch buffers: do not use the
// Codec from another goroutine meanwhile.
type Residual struct {
	c     *Codec
	e     []float32
	tmp   []float32
	dec   []float32
	warm  [][]float32
	round uint64
	decay float32 // 0 means 1: no decay
}

// SetDecay makes the residual decay before each message: e ← β·e + delta (0 < β ≤ 1; 1 is plain
// error feedback). With β < 1 old, never-sent error fades instead of piling up, as in SparseLoCo
// (the residual then also acts as the sender's momentum); Σ messages + e no longer equals Σ deltas.
func (r *Residual) SetDecay(beta float32) error {
	if !(beta > 0 && beta <= 1) {
		return fmt.Errorf("compress: residual decay %v: want 0 < β ≤ 1", beta)
	}
	r.decay = beta
	return nil
}

// Accumulate sets dst[i] = β·e[i] + delta[i], the error-feedback step before a message (β = 0 or
// 1: no decay, dst[i] = e[i] + delta[i]). dst may be e. A sender that keeps its residual itself (a
// peer sending slices of one vector to different aggregators) uses it to stay bit-identical with
// Residual.
func Accumulate(dst, e, delta []float32, beta float32) {
	dst, e = dst[:len(delta)], e[:len(delta)]
	if beta != 0 && beta != 1 {
		for i, d := range delta {
			dst[i] = beta*e[i] + d
		}
		return
	}
	for i, d := range delta {
		dst[i] = e[i] + d
	}
}

// NewResidual returns a zero residual for vectors of n values.
func (c *Codec) NewResidual(n int) (*Residual, error) {
	if n < 0 || n > c.maxElems {
		return nil, fmt.Errorf("%w: residual of %d values (MaxElements %d)", ErrLength, n, c.maxElems)
	}
	return &Residual{c: c, e: make([]float32, n), tmp: make([]float32, n), dec: make([]float32, 0, n)}, nil
}

// Encode adds delta to the residual, appends the message coding the sum to
// dst, and keeps in the residual what the message does not carry. On error
// (ErrLength if len(delta) differs from the residual's length, ErrNonFinite
// if e+delta has a NaN or ±Inf) the residual is unchanged and dst is returned
// as given.
func (r *Residual) Encode(dst []byte, delta []float32) ([]byte, error) {
	if len(delta) != len(r.e) {
		return dst, fmt.Errorf("%w: delta of %d values, residual of %d", ErrLength, len(delta), len(r.e))
	}
	Accumulate(r.tmp, r.e, delta, r.decay)
	seed := splitmix64(r.c.cfg.Seed ^ (r.round+1)*golden)
	start := len(dst)
	out, err := r.c.encode(dst, r.tmp, seed, &r.warm)
	if err != nil {
		return dst, err
	}
	dec, err := r.c.Decode(r.dec[:0], out[start:])
	if err != nil { // cannot happen for a message we just encoded
		return dst, fmt.Errorf("compress: residual: decoding own message: %w", err)
	}
	r.dec = dec
	for i, v := range dec {
		r.e[i] = r.tmp[i] - v
	}
	r.round++
	return out, nil
}

// Error returns the current residual e (aliased: valid until the next Encode
// or Reset; do not modify it).
func (r *Residual) Error() []float32 { return r.e }

// Round returns how many messages Encode has produced since the last Reset.
func (r *Residual) Round() uint64 { return r.round }

// Reset zeroes the residual and the round counter and drops the warm start.
func (r *Residual) Reset() {
	clear(r.e)
	r.warm = nil
	r.round = 0
}
