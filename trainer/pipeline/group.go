package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// Group is one DiLoCo worker made of S stage Members in one process, linked in process
// (NewLocalGroup), one goroutine per stage during the inner steps: the in-process form of a
// stage group taking part in a cohort. Its first stage reads each step's batch from the
// worker's source and hands the targets to the last stage.
type Group struct {
	members []*Member
	links   []Link
	src     trainer.Source
	batch   int // sequences a step: Micro micro-batches of the stage model's Batch
	feed    chan nn.Batch
	theta   []float32
}

// NewGroup builds a group of stages stages over the GPT model (whose Batch, ≥ 1, is the sequences
// of a step, cut into pc.Micro micro-batches), initialised to the whole model's θ_0 for model.Seed,
// reading its batches from src.
func NewGroup(model nn.GPTConfig, stages int, pc Config, outer trainer.OuterConfig, src trainer.Source) (*Group, error) {
	if pc.Micro == 0 {
		pc.Micro = 1
	}
	if src == nil {
		return nil, fmt.Errorf("%w: a group needs a data source", ErrConfig)
	}
	if model.Batch < 1 {
		return nil, fmt.Errorf("%w: a group needs the sequences of a step (model.Batch), got %d", ErrConfig, model.Batch)
	}
	if pc.Micro < 1 || model.Batch%pc.Micro != 0 {
		return nil, fmt.Errorf("%w: %d micro-batches do not divide a batch of %d sequences", ErrConfig, pc.Micro, model.Batch)
	}
	specs, err := nn.SplitStages(model.Layers, stages)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	scfg := model
	scfg.Batch = model.Batch / pc.Micro
	scfg.EvalBatch = 0
	g := &Group{links: NewLocalGroup(stages), src: src, batch: model.Batch}
	for _, spec := range specs {
		sm, err := nn.NewGPTStage(scfg, spec)
		if err != nil {
			return nil, err
		}
		st, err := NewStage(sm, pc)
		if err != nil {
			return nil, err
		}
		m, err := NewMember(st, outer)
		if err != nil {
			return nil, err
		}
		g.members = append(g.members, m)
	}
	if stages > 1 {
		g.feed = make(chan nn.Batch, 2)
	}
	return g, nil
}

// Members are the group's stages, in stage order.
func (g *Group) Members() []*Member { return g.members }

// BatchSize is the sequences of one inner step.
func (g *Group) BatchSize() int { return g.batch }

// Theta is the group's θ_t: its members' ranges concatenated in stage order (the whole model's
// layout; read only, valid until the next call).
func (g *Group) Theta() []float32 {
	g.theta = g.theta[:0]
	for _, m := range g.members {
		g.theta = append(g.theta, m.Global()...)
	}
	return g.theta
}

// batches is stage s's source of step batches: the first reads the worker's source and passes a
// copy of the targets to the last, which waits for them.
func (g *Group) batches(s int) Batches {
	S := len(g.members)
	switch {
	case s == 0:
		return func(ctx context.Context, b *nn.Batch) error {
			g.src.Next(b, g.batch)
			if S == 1 {
				return nil
			}
			select {
			case g.feed <- nn.Batch{Y: append([]int(nil), b.Y...)}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	case s == S-1:
		return func(ctx context.Context, b *nn.Batch) error {
			select {
			case *b = <-g.feed:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// InnerSteps runs h inner steps on every stage at once (a goroutine each) and returns the group's
// stats. The first stage's failure cancels the others; the group cannot go on after one.
func (g *Group) InnerSteps(ctx context.Context, h int) (trainer.InnerStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stats := make([]trainer.InnerStats, len(g.members))
	errs := make([]error, len(g.members))
	var wg sync.WaitGroup
	for s, m := range g.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := m.InnerSteps(ctx, g.links[s], h, g.batches(s))
			if err != nil {
				errs[s] = err
				cancel()
			}
			stats[s] = st
		}()
	}
	wg.Wait()
	if err := rootFailure(errs); err != nil {
		return trainer.InnerStats{}, err
	}
	return stats[0], nil
}

// rootFailure is the failure a group reports from its stages' errors (nil where a stage did not
// fail): the first stage's, in stage order, that is not the cancellation a failure elsewhere
// caused, else the first stage's. Several stages can fail of the same cause (a short batch the
// first stage reads and the last stage's targets come from), and which of them fails first is
// the scheduler's choice: the report is not.
func rootFailure(errs []error) error {
	pick := -1
	for s, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			pick = s
			break
		}
		if pick < 0 {
			pick = s
		}
	}
	if pick < 0 {
		return nil
	}
	return fmt.Errorf("stage %d: %w", pick, errs[pick])
}

// MarkSent marks every member (Member.MarkSent).
func (g *Group) MarkSent() {
	for _, m := range g.members {
		m.MarkSent()
	}
}

// OuterStep applies aggs[s], the aggregate of stage s's range, on every member, the first stage
// first: the last stage's copy of wte takes the first's θ_{t+1} of wte. With carry, the members
// keep the progress made since MarkSent (Member.OuterStepCarry).
func (g *Group) OuterStep(aggs [][]float32, carry bool) error {
	if len(aggs) != len(g.members) {
		return fmt.Errorf("%w: %d aggregates for %d stages", ErrConfig, len(aggs), len(g.members))
	}
	var tied []float32
	for s, m := range g.members {
		var t []float32
		if s > 0 && s == len(g.members)-1 {
			t = tied
		}
		step := m.OuterStep
		if carry {
			step = m.OuterStepCarry
		}
		if err := step(aggs[s], t); err != nil {
			return fmt.Errorf("stage %d: %w", s, err)
		}
		if s == 0 {
			tied = m.TiedGlobal()
		}
	}
	return nil
}
