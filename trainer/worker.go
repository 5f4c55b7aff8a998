package trainer

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cohortlab/cohort/trainer/nn"
)

// Source yields training batches for one worker from its own data shard.
type Source interface {
	// Next fills b with the next batch of n samples, reusing b's slices.
	Next(b *nn.Batch, n int)
	// Len is the number of samples in the shard.
	Len() int
}

// WorkerConfig configures one DiLoCo participant.
type WorkerConfig struct {
	Inner AdamWConfig
	Outer OuterConfig
}

// Worker is one DiLoCo participant: a local model trained by AdamW, plus its replica of the global
// parameters θ_t and the outer Nesterov state. It owns no goroutines; the caller drives it:
//
//	for t := 0; t < rounds; t++ {
//		w.InnerSteps(H)                 // θ_local ← H AdamW steps from θ_t
//		d := w.PseudoGradient(nil)      // Δ = θ_t − θ_local
//		agg := exchange(d)              // average over participants (compressed on the wire)
//		w.OuterStep(agg)                // θ_{t+1} ← Nesterov(θ_t, agg); θ_local ← θ_{t+1}
//	}
//
// Every replica that applies the same aggregate to the same θ_t ends bit-identical.
type Worker struct {
	model  nn.Model
	src    Source
	inner  *AdamW
	outer  *Nesterov
	global []float32 // θ_t
	sentAt []float32 // local parameters at MarkSent (empty: none pending)
	grad   []float32
	batch  nn.Batch
	steps  int
	seen   int
	at     int // the cohort's step the next inner step takes (the learning-rate schedule's s)
}

// NewWorker wraps model (whose current parameters become θ_0) and its data source.
func NewWorker(model nn.Model, src Source, cfg WorkerConfig) (*Worker, error) {
	n := len(model.Params())
	inner, err := NewAdamW(n, cfg.Inner)
	if err != nil {
		return nil, err
	}
	outer, err := NewNesterov(n, cfg.Outer)
	if err != nil {
		return nil, err
	}
	return &Worker{
		model:  model,
		src:    src,
		inner:  inner,
		outer:  outer,
		global: append([]float32(nil), model.Params()...),
		grad:   make([]float32, n),
	}, nil
}

// InnerStats describes one call of InnerSteps.
type InnerStats struct {
	Steps    int
	Samples  int
	MeanLoss float64
	// LR is the learning rate of the last step; MaxGradNorm the largest gradient norm seen
	// (before clipping).
	LR          float32
	MaxGradNorm float32
}

// SeekStep sets the step of the cohort's timeline the next inner step takes: the learning-rate
// schedule (AdamWConfig.LRAt) is a function of it, so a peer that joins late, resumes or skips a
// round trains at the rate the others use. A cohort's step for round r (1-based) of H inner steps
// starts at (r−1)·H. Without SeekStep a worker counts from 0.
func (w *Worker) SeekStep(s int) {
	w.at = max(s, 0)
}

// Step is the cohort step the next inner step takes.
func (w *Worker) Step() int { return w.at }

// InnerSteps runs h AdamW steps on local batches, starting from the current local parameters.
func (w *Worker) InnerSteps(h int) (InnerStats, error) {
	var st InnerStats
	bs := w.model.BatchSize()
	params := w.model.Params()
	for i := 0; i < h; i++ {
		w.src.Next(&w.batch, bs)
		loss, err := w.model.Grad(w.batch, w.grad)
		if err != nil {
			return st, fmt.Errorf("inner step %d: %w", w.steps, err)
		}
		if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
			return st, fmt.Errorf("inner step %d: loss is %v", w.steps, loss)
		}
		norm := w.inner.StepAt(params, w.grad, w.at)
		st.LR = w.inner.cfg.LRAt(w.at)
		st.MaxGradNorm = max(st.MaxGradNorm, norm)
		w.at++
		w.steps++
		st.Steps++
		st.Samples += bs
		st.MeanLoss += float64(loss)
	}
	if st.Steps > 0 {
		st.MeanLoss /= float64(st.Steps)
	}
	w.seen += st.Samples
	return st, nil
}

// PseudoGradient appends Δ = θ_t − θ_local to dst[:0] and returns it.
func (w *Worker) PseudoGradient(dst []float32) []float32 {
	local := w.model.Params()
	dst = growFloats(dst, len(local))
	for i, g := range w.global {
		dst[i] = g - local[i]
	}
	return dst
}

// OuterStep applies the aggregated pseudo-gradient to θ_t and restarts the local model from θ_{t+1}.
// The inner optimizer state carries over, as in DiLoCo.
func (w *Worker) OuterStep(aggregate []float32) error {
	if len(aggregate) != len(w.global) {
		return fmt.Errorf("outer step: aggregate has %d values, model has %d", len(aggregate), len(w.global))
	}
	w.outer.Step(w.global, aggregate)
	copy(w.model.Params(), w.global)
	w.sentAt = w.sentAt[:0]
	return nil
}

// MarkSent records the local parameters at the moment the pseudo-gradient leaves, so that inner
// steps taken while it travels (communication overlap) can be carried onto θ_{t+1} by
// OuterStepCarry.
func (w *Worker) MarkSent() {
	w.sentAt = growFloats(w.sentAt, len(w.global))
	copy(w.sentAt, w.model.Params())
}

// OuterStepCarry is OuterStep for a worker that kept training after MarkSent: it applies the
// aggregate to θ_t and restarts the local model from θ_{t+1} plus the progress made since
// MarkSent (θ_local − θ_sent), as in Streaming DiLoCo's overlapped communication. That progress is
// part of the next pseudo-gradient. The global replica is the same as OuterStep's.
func (w *Worker) OuterStepCarry(aggregate []float32) error {
	if len(w.sentAt) != len(w.global) {
		return fmt.Errorf("outer step: no MarkSent before OuterStepCarry")
	}
	if len(aggregate) != len(w.global) {
		return fmt.Errorf("outer step: aggregate has %d values, model has %d", len(aggregate), len(w.global))
	}
	w.outer.Step(w.global, aggregate)
	local := w.model.Params()
	for i, g := range w.global {
		local[i] = g + (local[i] - w.sentAt[i])
	}
	w.sentAt = w.sentAt[:0]
	return nil
}

// Global is θ_t, this worker's replica of the global parameters (read only).
func (w *Worker) Global() []float32 { return w.global }

// Model is the worker's local model.
func (w *Worker) Model() nn.Model { return w.model }

// Samples is the number of training samples consumed so far.
func (w *Worker) Samples() int { return w.seen }

// ParamsHash is SHA-256 over the little-endian IEEE-754 bytes of p: the model hash replicas compare.
func ParamsHash(p []float32) [32]byte {
	h := sha256.New()
	var buf [4096]byte
	for len(p) > 0 {
		n := min(len(p), len(buf)/4)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(p[i]))
		}
		h.Write(buf[:4*n])
		p = p[n:]
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func growFloats(dst []float32, n int) []float32 {
	if cap(dst) < n {
		return make([]float32, n)
	}
	return dst[:n]
}

// Average writes the weighted mean Σ wᵢ·xᵢ / Σ wᵢ of xs into dst (reusing it) in a fixed order, so
// every replica computing it from the same inputs gets the same bits. Weights must be positive.
func Average(dst []float32, xs [][]float32, weights []float64) ([]float32, error) {
	if len(xs) == 0 {
		return nil, fmt.Errorf("average: no inputs")
	}
	if len(weights) != len(xs) {
		return nil, fmt.Errorf("average: %d inputs but %d weights", len(xs), len(weights))
	}
	n := len(xs[0])
	var total float64
	for i, x := range xs {
		if len(x) != n {
			return nil, fmt.Errorf("average: input %d has %d values, want %d", i, len(x), n)
		}
		if !(weights[i] > 0) || math.IsInf(weights[i], 0) {
			return nil, fmt.Errorf("average: weight %d is %v, want positive and finite", i, weights[i])
		}
		total += weights[i]
	}
	dst = growFloats(dst, n)
	clear(dst)
	for i, x := range xs {
		w := float32(weights[i] / total)
		for j, v := range x {
			dst[j] += w * v
		}
	}
	return dst, nil
}

// Reset replaces θ_t and the outer momentum (a late joiner or a re-synced replica) and restarts
// the local model from θ_t.
func (w *Worker) Reset(theta, momentum []float32) error {
	if len(theta) != len(w.global) || len(momentum) != len(w.global) {
		return fmt.Errorf("reset: got %d parameters and %d momentum values, model has %d", len(theta), len(momentum), len(w.global))
	}
	copy(w.global, theta)
	copy(w.outer.Momentum(), momentum)
	copy(w.model.Params(), theta)
	w.sentAt = w.sentAt[:0]
	return nil
}

// Momentum is the outer optimizer's momentum buffer (read only).
func (w *Worker) Momentum() []float32 { return w.outer.Momentum() }

// Discard drops the local progress of an abandoned round: the local model restarts from θ_t.
func (w *Worker) Discard() {
	copy(w.model.Params(), w.global)
	w.sentAt = w.sentAt[:0]
}
