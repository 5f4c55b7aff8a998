package pipeline

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// Member is one stage of a stage group as a DiLoCo member for its range of the global model: it
// keeps θ_t of the range the stage owns (nn.GPTStage.Owned) and the outer Nesterov state of that
// range, trains H inner steps with its group (Stage.Step over the group's Link), computes the
// pseudo-gradient of its range and applies the outer step to it. Like trainer.Worker it owns no
// goroutines; the caller drives every member of a group at once (each waits for its neighbours'
// frames):
//
//	m.InnerSteps(ctx, link, H, next)   // with the group: θ_local ← H AdamW steps from θ_t
//	d := m.PseudoGradient(nil)         // Δ = θ_t − θ_local over the owned range
//	agg := exchange(d)                 // averaged over the cohort's members for this range
//	m.OuterStep(agg, tied)             // θ_{t+1} ← Nesterov(θ_t, agg) on the range
//
// The outer step is trainer.Nesterov's arithmetic, element by element, so the members' ranges
// concatenated in stage order are bit for bit the θ_{t+1} a whole-model trainer.Worker computes
// from the same aggregate. The last stage of a group of several holds a copy of wte that is not
// in its range (the first stage owns wte): OuterStep overwrites it with the first stage's
// θ_{t+1} of wte (TiedGlobal), so the two copies stay the same bits. The inner AdamW state
// carries over between rounds, as in DiLoCo. Not safe for concurrent use.
type Member struct {
	st     *Stage
	off    int // the owned range starts at Params()[off]
	lo, n  int // … and is [lo, lo+n) of the whole vector
	global []float32
	outer  *trainer.Nesterov
	sentAt []float32 // the stage's parameters at MarkSent (empty: none pending)
	batch  nn.Batch
	at     int
	seen   int
	tr     Traffic
}

// Traffic accumulates what a stage sent, received and computed over its inner steps.
type Traffic struct {
	Steps          int
	Sent, Received [numKinds]int64 // frame bytes by kind
	Busy, Wall     time.Duration
}

func (t *Traffic) add(st StepStats) {
	t.Steps++
	for k := range st.Sent {
		t.Sent[k] += st.Sent[k]
		t.Received[k] += st.Received[k]
	}
	t.Busy += st.Busy
	t.Wall += st.Wall
}

// SentOf is the frame bytes of kind k sent per step (0 before any step).
func (t Traffic) SentOf(k Kind) float64 { return t.perStep(t.Sent[min(k, numKinds-1)]) }

// ReceivedOf is the frame bytes of kind k received per step.
func (t Traffic) ReceivedOf(k Kind) float64 { return t.perStep(t.Received[min(k, numKinds-1)]) }

// SentPerStep is every frame's bytes sent per step.
func (t Traffic) SentPerStep() float64 {
	var n int64
	for _, b := range t.Sent {
		n += b
	}
	return t.perStep(n)
}

// Utilisation is the stage's busy time over its steps' wall time.
func (t Traffic) Utilisation() float64 {
	if t.Wall <= 0 {
		return 0
	}
	return t.Busy.Seconds() / t.Wall.Seconds()
}

func (t Traffic) perStep(n int64) float64 {
	if t.Steps == 0 {
		return 0
	}
	return float64(n) / float64(t.Steps)
}

// NewMember makes st a DiLoCo member: its current owned parameters become θ_0 of its range.
func NewMember(st *Stage, outer trainer.OuterConfig) (*Member, error) {
	off, lo, n := st.Model().Owned()
	o, err := trainer.NewNesterov(n, outer)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	p := st.Model().Params()
	return &Member{st: st, off: off, lo: lo, n: n, outer: o, global: append([]float32(nil), p[off:off+n]...)}, nil
}

// Stage is the member's pipeline stage.
func (m *Member) Stage() *Stage { return m.st }

// Range is the range [lo, hi) of the whole model's vector the member owns.
func (m *Member) Range() (lo, hi int) { return m.lo, m.lo + m.n }

// Global is θ_t over the member's range (read only).
func (m *Member) Global() []float32 { return m.global }

// Momentum is the outer momentum over the member's range (read only).
func (m *Member) Momentum() []float32 { return m.outer.Momentum() }

// TiedGlobal is, on the first stage, θ_t of wte (the tensor it owns and the last stage copies):
// what OuterStep of the last stage takes after the first's. Nil on the other stages.
func (m *Member) TiedGlobal() []float32 {
	if !m.st.Model().Spec().IsFirst() {
		return nil
	}
	lo, hi, _ := m.st.Model().Tied()
	return m.global[lo-m.off : hi-m.off]
}

// tiedCopy is the last stage's copy of wte, outside its range: [lo, hi) of its vector.
func (m *Member) tiedCopy() (lo, hi int, ok bool) {
	spec := m.st.Model().Spec()
	if spec.IsFirst() {
		return 0, 0, false
	}
	return m.st.Model().Tied()
}

// SeekStep sets the cohort step the next inner step takes (trainer.Worker.SeekStep).
func (m *Member) SeekStep(s int) { m.at = max(s, 0) }

// Step is the cohort step the next inner step takes.
func (m *Member) Step() int { return m.at }

// Traffic is what the member's stage sent, received and computed over its inner steps so far.
func (m *Member) Traffic() Traffic { return m.tr }

// Batches fills b with an inner step's batch (M·Batch sequences, the member's source reusing b's
// slices): the first stage reads its tokens, the last its targets.
type Batches func(ctx context.Context, b *nn.Batch) error

// InnerSteps runs h inner steps of the member's stage over link, from its current parameters,
// every member of the group running the same h at the same cohort step. next gives the first and
// the last stage each step's batch (the middle stages do not call it and may pass nil). The stats
// are the group's: every stage learns each step's loss from the last. A failed step leaves the
// group's stages at different steps: the group restarts from a common state.
func (m *Member) InnerSteps(ctx context.Context, link Link, h int, next Batches) (trainer.InnerStats, error) {
	var st trainer.InnerStats
	spec := m.st.Model().Spec()
	needs := spec.IsFirst() || spec.IsLast()
	if needs && next == nil {
		return st, fmt.Errorf("%w: stage %d of %d needs batches", ErrConfig, spec.Index, spec.Count)
	}
	bs := m.st.cfg.Micro * m.st.Model().Config().Batch
	for i := 0; i < h; i++ {
		if needs {
			if err := next(ctx, &m.batch); err != nil {
				return st, fmt.Errorf("pipeline: stage %d: batch of step %d: %w", spec.Index, m.at, err)
			}
		}
		ss, err := m.st.Step(ctx, link, m.at, m.batch)
		if err != nil {
			return st, fmt.Errorf("inner step %d: %w", m.at, err)
		}
		if math.IsNaN(float64(ss.Loss)) || math.IsInf(float64(ss.Loss), 0) {
			return st, fmt.Errorf("inner step %d: loss is %v", m.at, ss.Loss)
		}
		m.tr.add(ss)
		st.LR = m.st.cfg.AdamW.LRAt(m.at)
		st.MaxGradNorm = max(st.MaxGradNorm, ss.GradNorm)
		m.at++
		st.Steps++
		st.Samples += bs
		st.MeanLoss += float64(ss.Loss)
	}
	if st.Steps > 0 {
		st.MeanLoss /= float64(st.Steps)
	}
	m.seen += st.Samples
	return st, nil
}

// PseudoGradient appends Δ = θ_t − θ_local over the member's range to dst[:0] and returns it.
func (m *Member) PseudoGradient(dst []float32) []float32 {
	local := m.st.Model().Params()[m.off : m.off+m.n]
	if cap(dst) < m.n {
		dst = make([]float32, m.n)
	}
	dst = dst[:m.n]
	for i, g := range m.global {
		dst[i] = g - local[i]
	}
	return dst
}

func (m *Member) checkOuter(agg, tied []float32) error {
	if len(agg) != m.n {
		return fmt.Errorf("%w: outer step: aggregate has %d values, stage %d owns %d", ErrConfig, len(agg), m.st.Model().Spec().Index, m.n)
	}
	lo, hi, ok := m.tiedCopy()
	switch {
	case ok && len(tied) != hi-lo:
		return fmt.Errorf("%w: outer step: the last stage takes the first's wte (%d values), got %d", ErrConfig, hi-lo, len(tied))
	case !ok && tied != nil:
		return fmt.Errorf("%w: outer step: stage %d holds no copy of wte", ErrConfig, m.st.Model().Spec().Index)
	}
	return nil
}

// OuterStep applies the aggregated pseudo-gradient of the member's range to θ_t (trainer.Nesterov)
// and restarts the stage's parameters from θ_{t+1}. tied is, on the last stage of a group of
// several, the first stage's θ_{t+1} of wte (its TiedGlobal after its own OuterStep), copied into
// the last stage's copy of wte; nil on the other stages.
func (m *Member) OuterStep(agg, tied []float32) error {
	if err := m.checkOuter(agg, tied); err != nil {
		return err
	}
	m.outer.Step(m.global, agg)
	p := m.st.Model().Params()
	copy(p[m.off:m.off+m.n], m.global)
	if lo, hi, ok := m.tiedCopy(); ok {
		copy(p[lo:hi], tied)
	}
	m.sentAt = m.sentAt[:0]
	return nil
}

// MarkSent records the stage's parameters as the pseudo-gradient leaves, for OuterStepCarry
// (trainer.Worker.MarkSent).
func (m *Member) MarkSent() {
	p := m.st.Model().Params()
	if cap(m.sentAt) < len(p) {
		m.sentAt = make([]float32, len(p))
	}
	m.sentAt = m.sentAt[:len(p)]
	copy(m.sentAt, p)
}

// OuterStepCarry is OuterStep for a member that kept training after MarkSent: θ_{t+1} plus the
// progress since MarkSent (trainer.Worker.OuterStepCarry), on the last stage's copy of wte too
// (the first stage's θ_{t+1} of wte plus that copy's progress, the same bits as the first's
// since both copies took the same steps).
func (m *Member) OuterStepCarry(agg, tied []float32) error {
	if len(m.sentAt) != len(m.st.Model().Params()) {
		return fmt.Errorf("%w: outer step: no MarkSent before OuterStepCarry", ErrConfig)
	}
	if err := m.checkOuter(agg, tied); err != nil {
		return err
	}
	m.outer.Step(m.global, agg)
	p := m.st.Model().Params()
	local, sent := p[m.off:m.off+m.n], m.sentAt[m.off:m.off+m.n]
	for i, g := range m.global {
		local[i] = g + (local[i] - sent[i])
	}
	if lo, hi, ok := m.tiedCopy(); ok {
		local, sent := p[lo:hi], m.sentAt[lo:hi]
		for i, g := range tied {
			local[i] = g + (local[i] - sent[i])
		}
	}
	m.sentAt = m.sentAt[:0]
	return nil
}

// Restore puts the member back at a round boundary it saved (a checkpoint's): the stage's
// parameters params (θ_t over the owned range and, on the last stage of several, the copy of
// wte), the range's outer momentum, the cohort step of the next inner step and the samples
// consumed. The stage's AdamW state is restored on its own (Stage.Optimizer().SetState).
func (m *Member) Restore(params, momentum []float32, step, samples int) error {
	p := m.st.Model().Params()
	if len(params) != len(p) || len(momentum) != m.n || step < 0 || samples < 0 {
		return fmt.Errorf("%w: restore: %d parameters and %d momentum values (step %d, samples %d) for a stage of %d owning %d",
			ErrConfig, len(params), len(momentum), step, samples, len(p), m.n)
	}
	copy(p, params)
	copy(m.global, p[m.off:m.off+m.n])
	copy(m.outer.Momentum(), momentum)
	m.at, m.seen = step, samples
	m.sentAt = m.sentAt[:0]
	return nil
}

// Samples is the number of training samples the member's group consumed so far.
func (m *Member) Samples() int { return m.seen }
