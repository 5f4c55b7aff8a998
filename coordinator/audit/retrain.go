package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
)

// ErrScenario is a scenario that cannot be retrained.
var ErrScenario = errors.New("audit: invalid scenario")

// Scenario is a cohort to retrain: its contributors' shards and its training settings.
type Scenario struct {
	// Task names the model and the data and how they are split: Task.Workers is the number of
	// contributors, contributor i holding shard i of Task.Partition (as trainer.BuildTask and the
	// simulator split them for the same seed), Task.Seed also seeds θ_0, the batches and the codec.
	Task trainer.TaskSpec
	// Params are the proposal's training settings (H, rounds, codec, outer step, error decay, inner
	// AdamW); empty fields are spec.Defaults'.
	Params consensus.Hyperparams
	// Parallel bounds how many of a coalition's workers train at once (default GOMAXPROCS).
	Parallel int
}

// Retrainer evaluates a scenario's coalitions by retraining them.
type Retrainer struct {
	players int
	sizes   []int
	run     trainer.RunConfig
	// task builds the task afresh: its sources start their data streams from the beginning,
	// drawing repeat's batch order (0: the scenario's own).
	task  func(repeat int) (trainer.Task, error)
	empty Value
}

// NewRetrainer checks a scenario, splits its data once (for the shard sizes) and evaluates θ_0.
func NewRetrainer(sc Scenario) (*Retrainer, error) {
	if sc.Task.Workers < 1 || sc.Task.Workers > MaxPlayers {
		return nil, fmt.Errorf("%w: %d contributors, want 1 to %d", ErrPlayers, sc.Task.Workers, MaxPlayers)
	}
	run, err := runConfig(sc.Params, sc.Task.Seed, sc.Parallel)
	if err != nil {
		return nil, err
	}
	task, info, err := trainer.BuildTask(sc.Task)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	if len(task.Sources) != sc.Task.Workers {
		return nil, fmt.Errorf("%w: %d shards for %d contributors", ErrScenario, len(task.Sources), sc.Task.Workers)
	}
	r := &Retrainer{players: sc.Task.Workers, sizes: info.ShardSizes, run: run, task: func(repeat int) (trainer.Task, error) {
		spec := sc.Task
		spec.BatchSeed = RepeatSeed(spec.Seed, repeat)
		t, _, err := trainer.BuildTask(spec)
		return t, err
	}}
	if r.empty, err = evalInitial(task, sc.Task.Seed); err != nil {
		return nil, err
	}
	return r, nil
}

// runConfig is the in-process run of a proposal's training settings: the settings every peer and
// coordinator of a cohort with this proposal derive (spec.Of).
func runConfig(params consensus.Hyperparams, seed uint64, parallel int) (trainer.RunConfig, error) {
	if parallel < 0 {
		return trainer.RunConfig{}, fmt.Errorf("%w: parallel %d, want ≥ 0", ErrScenario, parallel)
	}
	h := spec.Fill(params)
	if err := spec.Check(h); err != nil {
		return trainer.RunConfig{}, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	t, err := spec.Of(consensus.Proposal{Params: h})
	if err != nil {
		return trainer.RunConfig{}, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	run := trainer.RunConfig{
		Mode: trainer.ModeDiLoCo, InnerSteps: int(t.InnerSteps), Rounds: int(t.Rounds), Seed: seed,
		Inner: t.Inner, Outer: t.Outer, Codec: t.Up.String(), ErrorDecay: t.ErrorDecay, Parallel: parallel,
	}
	if err := run.Validate(); err != nil {
		return trainer.RunConfig{}, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	return run, nil
}

// evalInitial is θ_0's validation loss and accuracy: the empty coalition's value.
func evalInitial(task trainer.Task, seed uint64) (Value, error) {
	m, err := task.NewModel(seed)
	if err != nil {
		return Value{}, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	loss, correct, count, err := m.Eval(task.Val)
	if err != nil {
		return Value{}, fmt.Errorf("audit: evaluate θ_0: %w", err)
	}
	if count == 0 {
		return Value{}, fmt.Errorf("%w: empty validation set", ErrScenario)
	}
	return Value{Loss: loss / float64(count), Accuracy: float64(correct) / float64(count)}, nil
}

// Players is the number of contributors.
func (r *Retrainer) Players() int { return r.players }

// ShardSizes is each contributor's shard size (samples; bytes for text).
func (r *Retrainer) ShardSizes() []int { return append([]int(nil), r.sizes...) }

// Codec is the setting the retrainings code updates with.
func (r *Retrainer) Codec() string { return r.run.Codec }

// RepeatSeed is the batch-order seed of a scenario's repeat k of its retrainings: 0 (the scenario's
// own order, seed's) for k = 0, and for k > 0 a seed mixed from seed and k, never 0.
func RepeatSeed(seed uint64, k int) uint64 {
	if k <= 0 {
		return 0
	}
	// splitmix64's finaliser of seed + k·golden ratio: nearby seeds and repeats far apart.
	z := seed + uint64(k)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	if z == 0 {
		z = 1
	}
	return z
}

// Value retrains the coalition c from θ_0 on its members' shards (fresh data streams each time,
// so a coalition's value does not depend on what was evaluated before) and returns the final
// validation loss and accuracy; the empty coalition is θ_0's.
func (r *Retrainer) Value(ctx context.Context, c Coalition) (Value, error) { return r.value(ctx, c, 0) }

// Repeat is the value function of repeat k of the retrainings: every coalition trained as Value
// trains it, its shards drawn in another batch order (k = 0 is Value). What the values of two
// repeats differ by is the retrainings' own noise, the resolution of the ground truth.
func (r *Retrainer) Repeat(k int) ValueFunc {
	return func(ctx context.Context, c Coalition) (Value, error) { return r.value(ctx, c, k) }
}

func (r *Retrainer) value(ctx context.Context, c Coalition, repeat int) (Value, error) {
	n := r.Players()
	if c&^All(n) != 0 {
		return Value{}, fmt.Errorf("%w: coalition %b has players beyond %d", ErrPlayers, uint64(c), n)
	}
	if c == 0 {
		return r.empty, nil
	}
	task, err := r.task(repeat)
	if err != nil {
		return Value{}, fmt.Errorf("retrain: %w", err)
	}
	var sources []trainer.Source
	for i := 0; i < n; i++ {
		if c.Has(i) {
			sources = append(sources, task.Sources[i])
		}
	}
	task.Sources = sources
	sum, err := trainer.Run(ctx, task, r.run)
	if err != nil {
		return Value{}, fmt.Errorf("retrain: %w", err)
	}
	v := Value{Loss: sum.FinalValLoss}
	if n := len(sum.History); n > 0 {
		v.Accuracy = sum.History[n-1].ValAccuracy
	}
	return v, nil
}

// Run retrains every coalition Solve asks for and returns the attributions.
func (r *Retrainer) Run(ctx context.Context, opt Options) (*Result, error) {
	return Solve(ctx, r.Players(), r.Value, opt)
}

// RunRepeated solves the game repeats times, repeat k on Repeat(k)'s retrainings (the same
// permutations each time when sampling), and combines them (Combine): attributions averaged, their
// standard errors and agreement measured across the repeats. opt.Progress sees each repeat's
// progress, counted over all of them.
func (r *Retrainer) RunRepeated(ctx context.Context, opt Options, repeats int) (*Result, error) {
	if repeats < 1 || repeats > MaxRepeats {
		return nil, fmt.Errorf("%w: %d repeats, want 1 to %d", ErrOptions, repeats, MaxRepeats)
	}
	var runs []*Result
	progress := opt.Progress
	for k := 0; k < repeats; k++ {
		o := opt
		if progress != nil {
			o.Progress = func(p Progress) {
				p.Repeat, p.Repeats = k+1, repeats
				progress(p)
			}
		}
		res, err := Solve(ctx, r.Players(), r.Repeat(k), o)
		if err != nil {
			return nil, fmt.Errorf("repeat %d: %w", k+1, err)
		}
		runs = append(runs, res)
	}
	return Combine(runs)
}
