package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"fmt"
	"hash"
	"log/slog"
	"math"
	"time"

	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// PositionedSource is a data source whose position a checkpoint saves (trainer.TextSource).
type PositionedSource interface {
	trainer.Source
	encoding.BinaryMarshaler
	encoding.BinaryUnmarshaler
}

// ProcessConfig configures one stage of a stage group whose stages run as processes of their
// own (RunProcess): together they train what RunDiLoCo trains with one worker, the same bits.
type ProcessConfig struct {
	// Model is the whole GPT: its Batch (≥ 1) the sequences of a step, its Seed θ_0's.
	Model nn.GPTConfig
	// Stage is this stage's index of Stages.
	Stage, Stages int
	// Pipeline is the step's configuration (micro-batches, schedule, inner AdamW, activation
	// codec), the same on every stage.
	Pipeline Config
	// Outer is the outer Nesterov step.
	Outer trainer.OuterConfig
	// Rounds and InnerSteps are the run's rounds and the inner steps H of each.
	Rounds, InnerSteps int
	// Source gives the first and the last stage every step's batch: both read the same sequence
	// (a source built from the same data and seed), the first its tokens, the last its targets.
	// Nil on the middle stages.
	Source PositionedSource
	// Val is the validation set: its Tokens on the first stage, its targets Y on the last, each
	// of the same sequences (the other fields may be empty); nothing on the middle stages.
	Val nn.Batch
	// Checkpoint, if set, is a directory where the stage saves its state after every round and
	// resumes from on a restart.
	Checkpoint string
	// Digest names the settings the group trains under; every stage must have the same (they
	// check it before training), and a checkpoint saved under another is refused.
	Digest [32]byte
	// DataDigest names the data the first and the last stage read (the training shard and the
	// validation set); the last checks that the first's is its own, so that the targets it
	// scores are the tokens' (the middle stages pass it on).
	DataDigest [32]byte
	// Progress, if set, is called on the last stage after every round.
	Progress func(trainer.RoundStats)
}

// ProcessSummary is what one stage did (RunProcess); the validation figures and the model hash
// are the last stage's.
type ProcessSummary struct {
	Stage      int    `json:"stage"`
	Stages     int    `json:"stages"`
	Model      string `json:"model"`
	Rounds     int    `json:"rounds"`
	InnerSteps int    `json:"inner_steps"`
	// ResumedFrom is the round the run resumed after (0: from θ_0).
	ResumedFrom int `json:"resumed_from"`
	// Blocks, Range, Parameters and StateBytes describe the stage (StageSummary's fields).
	Blocks     [2]int `json:"blocks"`
	Range      [2]int `json:"range"`
	Parameters int    `json:"parameters"`
	StateBytes int64  `json:"state_bytes"`
	// Per inner step: the frame bytes the stage sent, and its busy share.
	SentBytesPerStep float64 `json:"sent_bytes_per_step"`
	Utilisation      float64 `json:"utilisation"`
	// The last stage's: the final validation loss and next-token accuracy, the whole model's
	// hash (its first 8 bytes in hex, as trainer.Summary), and the rounds' history.
	FinalValLoss     float64               `json:"final_val_loss,omitempty"`
	FinalValAccuracy float64               `json:"final_val_accuracy,omitempty"`
	ModelHash        string                `json:"model_hash,omitempty"`
	History          []trainer.RoundRecord `json:"history,omitempty"`
	WallSeconds      float64               `json:"wall_seconds"`
}

func (c ProcessConfig) validate() error {
	switch {
	case c.Stages < 1 || c.Stage < 0 || c.Stage >= c.Stages:
		return fmt.Errorf("%w: stage %d of %d", ErrConfig, c.Stage, c.Stages)
	case c.Rounds < 1 || c.InnerSteps < 1:
		return fmt.Errorf("%w: %d rounds of %d inner steps, want ≥ 1 each", ErrConfig, c.Rounds, c.InnerSteps)
	case c.Model.Batch < 1:
		return fmt.Errorf("%w: the sequences of a step (Model.Batch) are %d", ErrConfig, c.Model.Batch)
	}
	first, last := c.Stage == 0, c.Stage == c.Stages-1
	T := c.Model.Context
	if T == 0 {
		T = 64 // nn.GPTConfig's default
	}
	switch {
	case (first || last) && c.Source == nil:
		return fmt.Errorf("%w: stage %d of %d reads the batches: it needs a source", ErrConfig, c.Stage, c.Stages)
	case first && (len(c.Val.Tokens) == 0 || len(c.Val.Tokens)%T != 0):
		return fmt.Errorf("%w: the first stage needs the validation tokens (whole sequences of %d), got %d", ErrConfig, T, len(c.Val.Tokens))
	case last && (len(c.Val.Y) == 0 || len(c.Val.Y)%T != 0):
		return fmt.Errorf("%w: the last stage needs the validation targets (whole sequences of %d), got %d", ErrConfig, T, len(c.Val.Y))
	}
	return nil
}

// processStage is one stage's run state.
type processStage struct {
	cfg     ProcessConfig
	link    Link
	member  *Member
	spec    nn.StageSpec
	micro   nn.GPTConfig // the stage model's configuration (Batch: a micro-batch)
	delta   []float32
	agg     []float32
	evalIn  []float32
	evalOut []float32
}

// RunProcess runs stage cfg.Stage of a group whose every stage is a process of its own, linked
// by link (quiclink's, between processes), for cfg.Rounds rounds; the group's stages run it at
// once with the same settings. Each round is RunDiLoCo's with one worker: H inner steps with the
// group, the range's pseudo-gradient averaged (trainer.Average, one worker) and the outer step on
// the range, θ_{t+1} of wte sent from the first stage to the last (a Theta frame); then the
// model hash, whose SHA-256 state travels along the stages each adding its range (Hash frames),
// and the validation loss, the validation set's chunks flowing forward only (Eval frames), both
// of which the last stage learns and reports. With cfg.Checkpoint the stage saves its state
// after every round; a restarted group first agrees on the latest round every stage saved and
// resumes there (Control frames, which also check that every stage runs the same settings).
//
// The stage holds only its own model slice, its AdamW moments and its range's θ_t and momentum:
// never a whole-model vector. A failure of a link (a stage that died) is returned: the process
// ends, and its neighbours' links fail in turn.
func RunProcess(ctx context.Context, link Link, cfg ProcessConfig) (*ProcessSummary, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Pipeline.Micro == 0 {
		cfg.Pipeline.Micro = 1
	}
	if cfg.Model.Batch%cfg.Pipeline.Micro != 0 {
		return nil, fmt.Errorf("%w: %d micro-batches do not divide a batch of %d sequences", ErrConfig, cfg.Pipeline.Micro, cfg.Model.Batch)
	}
	specs, err := nn.SplitStages(layersOf(cfg.Model), cfg.Stages)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	mc := cfg.Model
	mc.Batch = cfg.Model.Batch / cfg.Pipeline.Micro
	mc.EvalBatch = cfg.Model.Batch // validation in the whole model's chunks: its bits
	sm, err := nn.NewGPTStage(mc, specs[cfg.Stage])
	if err != nil {
		return nil, err
	}
	st, err := NewStage(sm, cfg.Pipeline)
	if err != nil {
		return nil, err
	}
	m, err := NewMember(st, cfg.Outer)
	if err != nil {
		return nil, err
	}
	p := &processStage{cfg: cfg, link: link, member: m, spec: sm.Spec(), micro: sm.Config()}
	start := time.Now()
	resumed, err := p.resume(ctx)
	if err != nil {
		return nil, err
	}
	lo, hi := m.Range()
	sum := &ProcessSummary{Stage: cfg.Stage, Stages: cfg.Stages, Model: sm.Config().Name(), Rounds: cfg.Rounds, InnerSteps: cfg.InnerSteps,
		ResumedFrom: int(resumed), Blocks: [2]int{p.spec.First, p.spec.Last}, Range: [2]int{lo, hi},
		Parameters: len(sm.Params()), StateBytes: st.StateBytes()}
	for t := int(resumed) + 1; t <= cfg.Rounds; t++ {
		if err := p.round(ctx, t, start, sum); err != nil {
			return nil, fmt.Errorf("pipeline: stage %d of %d: round %d: %w", cfg.Stage, cfg.Stages, t, err)
		}
	}
	if err := p.farewell(ctx); err != nil {
		return nil, fmt.Errorf("pipeline: stage %d of %d: %w", cfg.Stage, cfg.Stages, err)
	}
	tr := m.Traffic()
	sum.SentBytesPerStep, sum.Utilisation = tr.SentPerStep(), tr.Utilisation()
	sum.WallSeconds = time.Since(start).Seconds()
	return sum, nil
}

func layersOf(c nn.GPTConfig) int {
	if c.Layers == 0 {
		return 4 // nn.GPTConfig's default
	}
	return c.Layers
}

// batches is the stage's source of step batches: the first and the last stage read the same
// sequence from their copies of the source.
func (p *processStage) batches() Batches {
	if p.cfg.Source == nil {
		return nil
	}
	return func(_ context.Context, b *nn.Batch) error {
		p.cfg.Source.Next(b, p.cfg.Model.Batch)
		return nil
	}
}

// round runs round t: the inner steps, the outer step, the hash, the validation and the
// checkpoint.
func (p *processStage) round(ctx context.Context, t int, start time.Time, sum *ProcessSummary) error {
	m, cfg := p.member, p.cfg
	st, err := m.InnerSteps(ctx, p.link, cfg.InnerSteps, p.batches())
	if err != nil {
		return err
	}
	// As RunDiLoCo with one worker: the range's aggregate is the weighted mean of one
	// pseudo-gradient (trainer.Average: its bits).
	p.delta = m.PseudoGradient(p.delta)
	if p.agg, err = trainer.Average(p.agg, [][]float32{p.delta}, []float64{float64(st.Samples)}); err != nil {
		return err
	}
	if err := p.outerStep(ctx, t); err != nil {
		return err
	}
	hash, err := p.modelHash(ctx, t)
	if err != nil {
		return err
	}
	lossSum, correct, count, err := p.validate(ctx, t)
	if err != nil {
		return err
	}
	if p.spec.IsLast() {
		rs := trainer.RoundStats{Round: t, Rounds: cfg.Rounds, TrainLoss: st.MeanLoss,
			ValLoss: lossSum / float64(count), ValAccuracy: float64(correct) / float64(count),
			Elapsed: time.Since(start), ModelHash: hash}
		sum.History = append(sum.History, trainer.RoundRecord{Round: t, TrainLoss: rs.TrainLoss, ValLoss: rs.ValLoss, ValAccuracy: rs.ValAccuracy})
		sum.FinalValLoss, sum.FinalValAccuracy = rs.ValLoss, rs.ValAccuracy
		sum.ModelHash = fmt.Sprintf("%x", hash[:8])
		if cfg.Progress != nil {
			cfg.Progress(rs)
		}
	}
	if cfg.Checkpoint != "" {
		if err := p.save(uint32(t)); err != nil {
			return err
		}
	}
	return nil
}

// outerStep applies the range's aggregate; the first stage sends its θ_{t+1} of wte to the last,
// whose copy takes it.
func (p *processStage) outerStep(ctx context.Context, t int) error {
	m, S := p.member, p.spec.Count
	codecs := m.Stage().Codecs()
	switch {
	case S == 1 || (!p.spec.IsFirst() && !p.spec.IsLast()):
		return m.OuterStep(p.agg, nil)
	case p.spec.IsFirst():
		if err := m.OuterStep(p.agg, nil); err != nil {
			return err
		}
		payload, err := codecs.Encode(nil, Theta, m.TiedGlobal())
		if err != nil {
			return err
		}
		if err := p.link.Send(ctx, S-1, Frame{Kind: Theta, Step: uint32(t), Payload: payload}); err != nil {
			return fmt.Errorf("send θ of wte to stage %d: %w", S-1, err)
		}
		return nil
	}
	f, err := p.recv(ctx, 0, Theta, uint32(t), 0)
	if err != nil {
		return err
	}
	lo, hi, _ := m.Stage().Model().Tied()
	tied := make([]float32, hi-lo)
	if err := codecs.Decode(tied, f); err != nil {
		return fmt.Errorf("from stage 0: %w", err)
	}
	return m.OuterStep(p.agg, tied)
}

// recv is the next frame from stage from, which must be of kind k, step and micro.
func (p *processStage) recv(ctx context.Context, from int, k Kind, step, micro uint32) (Frame, error) {
	f, err := p.link.Recv(ctx, from)
	if err != nil {
		return Frame{}, fmt.Errorf("receive %v of round %d from stage %d: %w", k, step, from, err)
	}
	if f.Kind != k || f.Step != step || (k != Eval && f.Micro != micro) {
		return Frame{}, fmt.Errorf("%w: stage %d expected %v of round %d from stage %d, got %v of step %d micro-batch %d",
			ErrProtocol, p.spec.Index, k, step, from, f.Kind, f.Step, f.Micro)
	}
	return f, nil
}

// modelHash returns, on the last stage, the whole model's hash at θ_{t+1} (trainer.ParamsHash of
// the ranges in stage order): each stage adds its range to the SHA-256 state it receives from
// the previous one and passes it on.
func (p *processStage) modelHash(ctx context.Context, t int) ([32]byte, error) {
	var out [32]byte
	s, S := p.spec.Index, p.spec.Count
	h := sha256.New()
	if s > 0 {
		f, err := p.recv(ctx, s-1, Hash, uint32(t), 0)
		if err != nil {
			return out, err
		}
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(f.Payload); err != nil {
			return out, fmt.Errorf("%w: the hash state from stage %d: %w", ErrFrame, s-1, err)
		}
	}
	hashFloats(h, p.member.Global())
	if s == S-1 {
		h.Sum(out[:0])
		return out, nil
	}
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return out, err
	}
	if err := p.link.Send(ctx, s+1, Frame{Kind: Hash, Step: uint32(t), Payload: state}); err != nil {
		return out, fmt.Errorf("send the hash state to stage %d: %w", s+1, err)
	}
	return out, nil
}

// hashFloats writes p's little-endian IEEE-754 bytes to h (trainer.ParamsHash's encoding).
func hashFloats(h hash.Hash, p []float32) {
	var buf [4096]byte
	for len(p) > 0 {
		n := min(len(p), len(buf)/4)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(p[i]))
		}
		h.Write(buf[:4*n])
		p = p[n:]
	}
}

// validate runs the validation set forward through the group at θ_{t+1} in chunks of the whole
// model's batch (nn.GPT.Eval's chunks, so its bits): the first stage reads the tokens, each stage
// passes its activations on, the last scores them against the targets and returns the sums.
func (p *processStage) validate(ctx context.Context, t int) (lossSum float64, correct, count int, err error) {
	s, S := p.spec.Index, p.spec.Count
	T, D := p.micro.Context, p.micro.Embed
	chunk := p.cfg.Model.Batch
	codecs := p.member.Stage().Codecs()
	model := p.member.Stage().Model()
	step := uint32(t)
	send := func(n int, x []float32) error {
		var payload []byte
		if n > 0 {
			var err error
			if payload, err = codecs.EncodeEval(nil, x); err != nil {
				return err
			}
		}
		if err := p.link.Send(ctx, s+1, Frame{Kind: Eval, Step: step, Micro: uint32(n), Payload: payload}); err != nil {
			return fmt.Errorf("send validation to stage %d: %w", s+1, err)
		}
		return nil
	}
	if cap(p.evalOut) < chunk*T*D {
		p.evalOut = make([]float32, chunk*T*D)
		if s > 0 {
			p.evalIn = make([]float32, chunk*T*D)
		}
	}
	// evalChunk evaluates n sequences: the last stage adds up their loss, the others send their
	// activation on.
	evalChunk := func(mb nn.StageMicro, n int) error {
		if s == S-1 {
			l, c, err := model.Eval(mb, nil)
			if err != nil {
				return err
			}
			lossSum, correct, count = lossSum+l, correct+c, count+n*T
			return nil
		}
		out := p.evalOut[:n*T*D]
		if _, _, err := model.Eval(mb, out); err != nil {
			return err
		}
		return send(n, out)
	}
	if s == 0 {
		toks := p.cfg.Val.Tokens
		total := len(toks) / T
		for at := 0; at < total; at += chunk {
			n := min(chunk, total-at)
			mb := nn.StageMicro{Tokens: toks[at*T : (at+n)*T]}
			if S == 1 {
				mb.Y = p.cfg.Val.Y[at*T : (at+n)*T]
			}
			if err := evalChunk(mb, n); err != nil {
				return 0, 0, 0, err
			}
		}
		if S > 1 {
			return 0, 0, 0, send(0, nil)
		}
		return lossSum, correct, count, nil
	}
	ys := p.cfg.Val.Y
	for {
		f, err := p.recv(ctx, s-1, Eval, step, 0)
		if err != nil {
			return 0, 0, 0, err
		}
		n := int(f.Micro)
		if n == 0 {
			break
		}
		if n > chunk {
			return 0, 0, 0, fmt.Errorf("%w: a validation chunk of %d sequences from stage %d, at most %d", ErrFrame, n, s-1, chunk)
		}
		x := p.evalIn[:n*T*D]
		if err := codecs.DecodeEval(x, f); err != nil {
			return 0, 0, 0, fmt.Errorf("from stage %d: %w", s-1, err)
		}
		mb := nn.StageMicro{X: x}
		if s == S-1 {
			if count+n*T > len(ys) {
				return 0, 0, 0, fmt.Errorf("%w: stage 0 validates more sequences than the %d this stage has targets for", ErrProtocol, len(ys)/T)
			}
			mb.Y = ys[count : count+n*T]
		}
		if err := evalChunk(mb, n); err != nil {
			return 0, 0, 0, err
		}
	}
	if s < S-1 {
		return 0, 0, 0, send(0, nil)
	}
	if count != len(ys) {
		return 0, 0, 0, fmt.Errorf("%w: stage 0 validated %d sequences, this stage has targets for %d", ErrProtocol, count/T, len(ys)/T)
	}
	return lossSum, correct, count, nil
}

// save writes the stage's checkpoint of round t.
func (p *processStage) save(t uint32) error {
	m, st := p.member, p.member.Stage()
	am, av := st.Optimizer().Moments()
	c := &StageCheckpoint{Stage: p.spec.Index, Stages: p.spec.Count, Round: t, Step: m.Step(), Samples: m.Samples(),
		AdamT: st.Optimizer().Steps(), Digest: p.cfg.Digest, Params: st.Model().Params(), AdamM: am, AdamV: av, Momentum: m.Momentum()}
	if p.cfg.Source != nil {
		pos, err := p.cfg.Source.MarshalBinary()
		if err != nil {
			return fmt.Errorf("checkpoint: data position: %w", err)
		}
		c.Source = pos
	}
	return saveCheckpoint(p.cfg.Checkpoint, c)
}

// resume agrees with the group on the round to start after and restores the stage's state of
// that round: the latest round every stage saved (0 without checkpoints: θ_0).
func (p *processStage) resume(ctx context.Context) (uint32, error) {
	var ckpts []*StageCheckpoint
	if p.cfg.Checkpoint != "" {
		var err error
		if ckpts, err = loadCheckpoints(p.cfg.Checkpoint, p.spec.Index, p.spec.Count); err != nil {
			return 0, err
		}
	}
	for _, c := range ckpts {
		if c.Digest != p.cfg.Digest {
			return 0, fmt.Errorf("%w: the checkpoint of round %d in %s was saved under other settings", ErrCheckpoint, c.Round, p.cfg.Checkpoint)
		}
	}
	var own uint32
	if len(ckpts) > 0 {
		own = ckpts[0].Round
	}
	round, err := p.agree(ctx, own)
	if err != nil {
		return 0, err
	}
	if round == 0 {
		return 0, nil
	}
	for _, c := range ckpts {
		if c.Round != round {
			continue
		}
		if err := p.restore(c); err != nil {
			return 0, err
		}
		slog.Info("stage resumed", "stage", p.spec.Index, "stages", p.spec.Count, "round", round, "checkpoint", p.cfg.Checkpoint)
		return round, nil
	}
	return 0, fmt.Errorf("%w: the group resumes after round %d, but stage %d's checkpoints in %s are of round %d and the one before",
		ErrCheckpoint, round, p.spec.Index, p.cfg.Checkpoint, own)
}

func (p *processStage) restore(c *StageCheckpoint) error {
	m, st := p.member, p.member.Stage()
	if err := m.Restore(c.Params, c.Momentum, c.Step, c.Samples); err != nil {
		return fmt.Errorf("checkpoint of round %d: %w", c.Round, err)
	}
	if err := st.Optimizer().SetState(c.AdamM, c.AdamV, c.AdamT); err != nil {
		return fmt.Errorf("checkpoint of round %d: %w", c.Round, err)
	}
	if p.cfg.Source != nil {
		if len(c.Source) == 0 {
			return fmt.Errorf("%w: the checkpoint of round %d holds no data position", ErrCheckpoint, c.Round)
		}
		if err := p.cfg.Source.UnmarshalBinary(c.Source); err != nil {
			return fmt.Errorf("checkpoint of round %d: %w", c.Round, err)
		}
	}
	return nil
}

// farewell tells every neighbour that this stage is done and waits until each says the same:
// then every frame either sent the other has been read, and the link may close (closing a QUIC
// connection drops what its peer has not read yet).
func (p *processStage) farewell(ctx context.Context) error {
	s, S := p.spec.Index, p.spec.Count
	bye := func() []byte { return make([]byte, controlPayloadLen) }
	ns := neighbours(s, S)
	for _, n := range ns {
		if err := p.link.Send(ctx, n, Frame{Kind: Control, Step: uint32(p.cfg.Rounds), Micro: 2, Payload: bye()}); err != nil {
			return fmt.Errorf("send the end to stage %d: %w", n, err)
		}
	}
	for _, n := range ns {
		if _, err := p.recv(ctx, n, Control, uint32(p.cfg.Rounds), 2); err != nil {
			return err
		}
	}
	return nil
}

// neighbours are the stages that stage s of S exchanges frames with: s − 1, s + 1, and the
// first with the last.
func neighbours(s, S int) []int {
	var out []int
	for _, n := range []int{s - 1, s + 1} {
		if n >= 0 && n < S {
			out = append(out, n)
		}
	}
	if S > 2 && s == 0 {
		out = append(out, S-1)
	}
	if S > 2 && s == S-1 {
		out = append(out, 0)
	}
	return out
}

// agree returns the smallest of the stages' rounds, every stage checking that its predecessor
// trains under the same settings: the rounds travel 0 → 1 → … → S−1 (each taking the minimum),
// the last sends the result to stage 0, which passes it on to stages 1 … S−2 (reduceNorm's path).
func (p *processStage) agree(ctx context.Context, own uint32) (uint32, error) {
	s, S := p.spec.Index, p.spec.Count
	if S == 1 {
		return own, nil
	}
	data := p.cfg.DataDigest // the first stage's, passed along
	payload := func(r uint32) []byte {
		b := binary.LittleEndian.AppendUint32(make([]byte, 0, controlPayloadLen), r)
		b = append(b, p.cfg.Digest[:]...)
		return append(b, data[:]...)
	}
	parse := func(f Frame, from int) (uint32, error) {
		if len(f.Payload) != controlPayloadLen {
			return 0, fmt.Errorf("%w: %v payload of %d bytes", ErrFrame, f.Kind, len(f.Payload))
		}
		var d [32]byte
		copy(d[:], f.Payload[4:36])
		if d != p.cfg.Digest {
			return 0, fmt.Errorf("%w: stage %d trains under other settings than stage %d (digest %x, here %x)", ErrConfig, from, s, d[:8], p.cfg.Digest[:8])
		}
		return binary.LittleEndian.Uint32(f.Payload), nil
	}
	r := own
	if s > 0 {
		f, err := p.recv(ctx, s-1, Control, 0, 0)
		if err != nil {
			return 0, err
		}
		prev, err := parse(f, s-1)
		if err != nil {
			return 0, err
		}
		r = min(r, prev)
		copy(data[:], f.Payload[36:])
		if s == S-1 && data != p.cfg.DataDigest {
			return 0, fmt.Errorf("%w: stage 0 reads other data than the last stage (data digest %x, here %x): give both the same --data and --partition", ErrConfig, data[:8], p.cfg.DataDigest[:8])
		}
	}
	if s < S-1 {
		if err := p.link.Send(ctx, s+1, Frame{Kind: Control, Payload: payload(r)}); err != nil {
			return 0, fmt.Errorf("send the resume round to stage %d: %w", s+1, err)
		}
	} else {
		if err := p.link.Send(ctx, 0, Frame{Kind: Control, Micro: 1, Payload: payload(r)}); err != nil {
			return 0, fmt.Errorf("send the resume round to stage 0: %w", err)
		}
		return r, nil
	}
	from := s - 1
	if s == 0 {
		from = S - 1
	}
	f, err := p.recv(ctx, from, Control, 0, 1)
	if err != nil {
		return 0, err
	}
	if r, err = parse(f, from); err != nil {
		return 0, err
	}
	if s+1 < S-1 {
		if err := p.link.Send(ctx, s+1, Frame{Kind: Control, Micro: 1, Payload: payload(r)}); err != nil {
			return 0, fmt.Errorf("send the resume round to stage %d: %w", s+1, err)
		}
	}
	return r, nil
}
