package pipeline

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// Link carries frames between one stage and the others of its group. Frames from one stage to
// another arrive in the order they were sent. Send must not wait for the receiver to read (a
// link buffers, as a QUIC stream does), and takes ownership of f.Payload. Recv returns the next
// frame from stage from, waiting for it until ctx ends.
type Link interface {
	Send(ctx context.Context, to int, f Frame) error
	Recv(ctx context.Context, from int) (Frame, error)
}

// Config configures a stage's training step.
type Config struct {
	// Micro is the number of micro-batches M per step; each is the stage model's Batch sequences.
	// Zero means 1.
	Micro int
	// Schedule orders the micro-batches' passes (OneFOneB by default).
	Schedule Schedule
	// AdamW is the inner optimizer, the same on every stage. ClipNorm clips by the group's
	// global gradient norm (the stages exchange their sums of squares).
	AdamW trainer.AdamWConfig
	// Codec codes activations and their gradients between stages: a dense compress setting,
	// fp32 (the zero value) or q8 (one scale per row).
	Codec compress.Setting
}

// StepStats describes one step of one stage.
type StepStats struct {
	// Loss is the step's mean loss over its micro-batches (every stage learns it from the last).
	Loss float32
	// GradNorm is the group's global gradient norm before clipping.
	GradNorm float32
	// Sent and Received count frame bytes (FrameHeaderLen plus payload) by kind.
	Sent, Received [numKinds]int64
	// Busy is the time the stage computed (passes, coding, the optimizer); Wall the step's time.
	Busy, Wall time.Duration
}

// SentBytes is the total of Sent.
func (s StepStats) SentBytes() int64 {
	var n int64
	for _, b := range s.Sent {
		n += b
	}
	return n
}

// Stage trains one pipeline stage of a GPT: its model, its own AdamW state, and the buffers of
// the micro-batches in flight. Not safe for concurrent use.
type Stage struct {
	m      *nn.GPTStage
	cfg    Config
	clip   float32
	opt    *trainer.AdamW
	ops    []Op
	codecs *Codecs

	grad, acc, dx, up, out, tie []float32
	stash                       [][]float32 // input activations of micro-batches in flight
}

// NewStage returns the trainer of stage model m.
func NewStage(m *nn.GPTStage, cfg Config) (*Stage, error) {
	if cfg.Micro == 0 {
		cfg.Micro = 1
	}
	if cfg.Micro < 0 {
		return nil, fmt.Errorf("%w: %d micro-batches", ErrConfig, cfg.Micro)
	}
	spec := m.Spec()
	ops, err := cfg.Schedule.Ops(spec.Index, spec.Count, cfg.Micro)
	if err != nil {
		return nil, err
	}
	inner := cfg.AdamW
	inner.ClipNorm = 0 // clipped here, by the group's norm
	n := len(m.Params())
	opt, err := trainer.NewAdamW(n, inner)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := cfg.AdamW.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	tieLen := 0
	if spec.Count > 1 && (spec.IsFirst() || spec.IsLast()) {
		tieLen = m.TiedLen()
	}
	codecs, err := NewCodecs(cfg.Codec, m.ActivationLen(), m.Config().Embed, tieLen)
	if err != nil {
		return nil, err
	}
	mc := m.Config()
	if err := codecs.EnableEval(mc.EvalBatch * mc.Context * mc.Embed); err != nil {
		return nil, err
	}
	A := m.ActivationLen()
	s := &Stage{m: m, cfg: cfg, clip: cfg.AdamW.ClipNorm, opt: opt, ops: ops, codecs: codecs,
		acc: make([]float32, n)}
	s.grad = s.acc // one micro-batch: its gradient is the step's, written in place
	if cfg.Micro > 1 {
		s.grad = make([]float32, n)
	}
	if !spec.IsFirst() {
		s.dx = make([]float32, A)
		s.stash = make([][]float32, cfg.Micro)
	}
	if !spec.IsLast() {
		s.up, s.out = make([]float32, A), make([]float32, A)
	}
	if tieLen > 0 {
		s.tie = make([]float32, tieLen)
	}
	return s, nil
}

// Model is the stage's model (its live parameters).
func (s *Stage) Model() *nn.GPTStage { return s.m }

// Codecs are the stage's frame codecs (MaxFrame bounds what a link accepts).
func (s *Stage) Codecs() *Codecs { return s.codecs }

// Optimizer is the stage's AdamW (its state, for checkpoints and memory figures).
func (s *Stage) Optimizer() *trainer.AdamW { return s.opt }

// StateBytes is the memory of the stage's parameters and AdamW moments (m, v), in bytes: what
// one stage holds of the model's training state (gradient and activation buffers not counted).
func (s *Stage) StateBytes() int64 { return StateBytes(len(s.m.Params())) }

// StateBytes is the memory of n float32 parameters and their AdamW moments.
func StateBytes(n int) int64 { return 3 * 4 * int64(n) }

// Step runs one inner step of the stage: the step's M micro-batches through the schedule over
// link, then the tie's exchange, the global norm's, clipping and AdamW at schedule step step. b
// holds the step's M·Batch sequences: its Tokens on the first stage, its targets Y on the last
// (the others ignore it). Every stage of the group must run the same step with the same Config.
// A step that fails leaves the group's stages at different steps (some may have applied AdamW):
// the group restarts from a common state.
func (s *Stage) Step(ctx context.Context, link Link, step int, b nn.Batch) (StepStats, error) {
	start := time.Now()
	var st StepStats
	spec := s.m.Spec()
	cfg := s.m.Config()
	N := cfg.Batch * cfg.Context
	M := s.cfg.Micro
	first, last := spec.IsFirst(), spec.IsLast()
	if step < 0 || step > math.MaxUint32 {
		return st, fmt.Errorf("%w: step %d", ErrConfig, step)
	}
	if first && len(b.Tokens) != M*N {
		return st, fmt.Errorf("%w: stage 0 takes %d tokens a step (%d micro-batches of %d), got %d", ErrBatch, M*N, M, N, len(b.Tokens))
	}
	if last && len(b.Y) != M*N {
		return st, fmt.Errorf("%w: the last stage takes %d targets a step, got %d", ErrBatch, M*N, len(b.Y))
	}
	x := &stepRun{s: s, ctx: ctx, link: link, step: uint32(step), st: &st}
	clear(s.acc)
	var lossSum float64
	for _, op := range s.ops {
		m := op.Micro
		var mb nn.StageMicro
		if first {
			mb.Tokens = b.Tokens[m*N : (m+1)*N]
		}
		if last {
			mb.Y = b.Y[m*N : (m+1)*N]
		}
		if !first {
			mb.X = s.stash[m]
		}
		switch {
		case !op.Backward:
			if !first {
				if s.stash[m] == nil {
					s.stash[m] = make([]float32, s.m.ActivationLen())
				}
				mb.X = s.stash[m]
				if err := x.recvTensor(spec.Index-1, Activation, m, mb.X); err != nil {
					return st, err
				}
			}
			if last { // forward and backward are one run of the loss graph
				t := time.Now()
				loss, err := s.m.Backward(mb, nil, s.grad, s.dx)
				if err != nil {
					return st, err
				}
				lossSum += float64(loss)
				s.accumulate()
				st.Busy += time.Since(t)
				if !first {
					if err := x.sendTensor(spec.Index-1, Gradient, m, s.dx); err != nil {
						return st, err
					}
				}
				continue
			}
			t := time.Now()
			if err := s.m.Forward(mb, s.out); err != nil {
				return st, err
			}
			st.Busy += time.Since(t)
			if err := x.sendTensor(spec.Index+1, Activation, m, s.out); err != nil {
				return st, err
			}
		case !last:
			if err := x.recvTensor(spec.Index+1, Gradient, m, s.up); err != nil {
				return st, err
			}
			t := time.Now()
			if _, err := s.m.Backward(mb, s.up, s.grad, s.dx); err != nil {
				return st, err
			}
			s.accumulate()
			st.Busy += time.Since(t)
			if !first {
				if err := x.sendTensor(spec.Index-1, Gradient, m, s.dx); err != nil {
					return st, err
				}
			}
		}
	}
	t := time.Now()
	if M > 1 {
		inv := 1 / float32(M)
		for i := range s.acc {
			s.acc[i] *= inv
		}
	}
	st.Busy += time.Since(t)
	if err := x.exchangeTie(); err != nil {
		return st, err
	}
	total, loss, err := x.reduceNorm(lossSum)
	if err != nil {
		return st, err
	}
	t = time.Now()
	norm := math.Sqrt(total)
	if s.clip > 0 && norm > float64(s.clip) { // trainer.ClipGradNorm's rule, on the group's norm
		scale := float32(float64(s.clip) / (norm + 1e-6))
		for i := range s.acc {
			s.acc[i] *= scale
		}
	}
	s.opt.StepAt(s.m.Params(), s.acc, step)
	st.Busy += time.Since(t)
	st.GradNorm = float32(norm)
	st.Loss = float32(loss / float64(M))
	st.Wall = time.Since(start)
	return st, nil
}

// accumulate adds a micro-batch's gradient into the step's (with one micro-batch Backward wrote
// it there: s.grad is s.acc, and a stage holds one gradient buffer, not two).
func (s *Stage) accumulate() {
	if s.cfg.Micro > 1 {
		addInto(s.acc, s.grad)
	}
}

func addInto(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

// stepRun is one step's frame traffic.
type stepRun struct {
	s    *Stage
	ctx  context.Context
	link Link
	step uint32
	st   *StepStats
}

func (x *stepRun) send(to int, f Frame) error {
	if err := x.link.Send(x.ctx, to, f); err != nil {
		return fmt.Errorf("pipeline: stage %d: send %v of step %d micro-batch %d to stage %d: %w", x.s.m.Spec().Index, f.Kind, f.Step, f.Micro, to, err)
	}
	x.st.Sent[f.Kind] += int64(f.Size())
	return nil
}

func (x *stepRun) sendTensor(to int, k Kind, micro int, v []float32) error {
	t := time.Now()
	payload, err := x.s.codecs.Encode(nil, k, v)
	if err != nil {
		return fmt.Errorf("pipeline: stage %d: %w", x.s.m.Spec().Index, err)
	}
	x.st.Busy += time.Since(t)
	return x.send(to, Frame{Kind: k, Step: x.step, Micro: uint32(micro), Payload: payload})
}

// recv returns the next frame from stage from, which must be of kind k for this step and
// micro-batch micro.
func (x *stepRun) recv(from int, k Kind, micro int) (Frame, error) {
	self := x.s.m.Spec().Index
	f, err := x.link.Recv(x.ctx, from)
	if err != nil {
		return Frame{}, fmt.Errorf("pipeline: stage %d: receive %v of step %d micro-batch %d from stage %d: %w", self, k, x.step, micro, from, err)
	}
	x.st.Received[min(f.Kind, numKinds-1)] += int64(f.Size())
	if f.Kind != k || f.Step != x.step || f.Micro != uint32(micro) {
		return Frame{}, fmt.Errorf("%w: stage %d expected %v of step %d micro-batch %d from stage %d, got %v of step %d micro-batch %d",
			ErrProtocol, self, k, x.step, micro, from, f.Kind, f.Step, f.Micro)
	}
	return f, nil
}

func (x *stepRun) recvTensor(from int, k Kind, micro int, dst []float32) error {
	f, err := x.recv(from, k, micro)
	if err != nil {
		return err
	}
	t := time.Now()
	if err := x.s.codecs.Decode(dst, f); err != nil {
		return fmt.Errorf("pipeline: stage %d: from stage %d: %w", x.s.m.Spec().Index, from, err)
	}
	x.st.Busy += time.Since(t)
	return nil
}

// exchangeTie swaps the tied wte's gradient between the first and the last stage; both then hold
// first's + last's, the same bits.
func (x *stepRun) exchangeTie() error {
	spec := x.s.m.Spec()
	if spec.Count == 1 || !(spec.IsFirst() || spec.IsLast()) {
		return nil
	}
	other := spec.Count - 1
	if spec.IsLast() {
		other = 0
	}
	lo, hi, _ := x.s.m.Tied()
	own := x.s.acc[lo:hi]
	if err := x.sendTensor(other, Tie, 0, own); err != nil {
		return err
	}
	if err := x.recvTensor(other, Tie, 0, x.s.tie); err != nil {
		return err
	}
	t := time.Now()
	for i, v := range x.s.tie {
		if spec.IsFirst() {
			own[i] += v // first's + last's
		} else {
			own[i] = v + own[i]
		}
	}
	x.st.Busy += time.Since(t)
	return nil
}

// reduceNorm returns the group's sum of squared gradients (each tensor counted once: not the
// last stage's tied copy) and the step's summed loss. The partial sums travel 0 → 1 → … → S−1
// (added in stage order, so every stage gets the same bits); the last stage sends the total
// with the loss to stage 0, which passes it on to stages 1 … S−2.
func (x *stepRun) reduceNorm(lossSum float64) (total, loss float64, err error) {
	spec := x.s.m.Spec()
	t := time.Now()
	var ss float64
	for _, sp := range x.s.m.Spans() {
		if sp.Tied {
			continue
		}
		for _, g := range x.s.acc[sp.Stage : sp.Stage+sp.Len] {
			ss += float64(g) * float64(g)
		}
	}
	x.st.Busy += time.Since(t)
	S, self := spec.Count, spec.Index
	if S == 1 {
		return ss, lossSum, nil
	}
	if self > 0 {
		f, err := x.recv(self-1, NormPartial, 0)
		if err != nil {
			return 0, 0, err
		}
		prev, _, err := parseNorm(f)
		if err != nil {
			return 0, 0, fmt.Errorf("pipeline: stage %d: from stage %d: %w", self, self-1, err)
		}
		ss = prev + ss
	}
	if self < S-1 {
		if err := x.send(self+1, Frame{Kind: NormPartial, Step: x.step, Payload: normPayload(ss, 0)}); err != nil {
			return 0, 0, err
		}
	} else {
		if err := x.send(0, Frame{Kind: NormTotal, Step: x.step, Payload: normPayload(ss, lossSum)}); err != nil {
			return 0, 0, err
		}
		return ss, lossSum, nil
	}
	from := self - 1
	if self == 0 {
		from = S - 1
	}
	f, err := x.recv(from, NormTotal, 0)
	if err != nil {
		return 0, 0, err
	}
	if total, loss, err = parseNorm(f); err != nil {
		return 0, 0, fmt.Errorf("pipeline: stage %d: from stage %d: %w", self, from, err)
	}
	if self+1 < S-1 {
		if err := x.send(self+1, Frame{Kind: NormTotal, Step: x.step, Payload: f.Payload}); err != nil {
			return 0, 0, err
		}
	}
	return total, loss, nil
}
