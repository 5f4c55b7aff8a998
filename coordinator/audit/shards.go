package audit

import (
	"fmt"
	"strings"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// Shard is one contributor's data, given as it is (a contributor's own shard directory) rather
// than cut out of a data set by a partition.
type Shard struct {
	// Name names the contributor (in errors).
	Name string
	// Size is the shard's size as ShardSizes reports it (samples; bytes for text).
	Size int
	// Open returns a new source over the shard, its stream from the start: every retraining opens
	// its members' shards anew, so a coalition's value does not depend on what was evaluated
	// before. Repeat 0 is the audit's batch order, and repeat k > 0 another one (Retrainer.Repeat);
	// sources opened for the same repeat must draw the same batches.
	Open func(repeat int) (trainer.Source, error)
}

// ShardScenario is a cohort to retrain from its contributors' own shards: a finished cohort's,
// with the settings its proposal fixed, validated on the split its coordinators validated on.
type ShardScenario struct {
	// Model is the proposal's model ("mlp:784-256-10", "gpt:L-D-NH-T", ...; trainer.NewModel).
	Model string
	// Batch is each contributor's batch size; 0 means the model's default.
	Batch int
	// Seed seeds θ_0 (spec.Of(proposal).Seed gives the cohort's own θ_0) and the codec.
	Seed uint64
	// Shards are the contributors, player i holding Shards[i].
	Shards []Shard
	// Val is the validation split every coalition's model is measured on.
	Val *trainer.Validation
	// Params are the proposal's training settings; empty fields are spec.Defaults'.
	Params consensus.Hyperparams
	// Parallel bounds how many of a coalition's workers train at once (default GOMAXPROCS).
	Parallel int
}

// NewShardRetrainer checks a scenario of given shards (each opened once, to refuse an empty or
// unreadable one before any retraining) and evaluates θ_0 on its validation split.
func NewShardRetrainer(sc ShardScenario) (*Retrainer, error) {
	n := len(sc.Shards)
	if n < 1 || n > MaxPlayers {
		return nil, fmt.Errorf("%w: %d contributors, want 1 to %d", ErrPlayers, n, MaxPlayers)
	}
	if sc.Batch < 0 {
		return nil, fmt.Errorf("%w: batch %d, want ≥ 0 (0: the model's default)", ErrScenario, sc.Batch)
	}
	if sc.Val == nil || sc.Val.Len() == 0 {
		return nil, fmt.Errorf("%w: no validation split", ErrScenario)
	}
	run, err := runConfig(sc.Params, sc.Seed, sc.Parallel)
	if err != nil {
		return nil, err
	}
	if _, err := trainer.NewModel(sc.Model, sc.Batch, sc.Seed); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	shards := append([]Shard(nil), sc.Shards...)
	sizes := make([]int, n)
	seen := make(map[string]bool, n)
	for i, s := range shards {
		if s.Name == "" || seen[s.Name] {
			return nil, fmt.Errorf("%w: shard %d is named %q: want a distinct, non-empty contributor name", ErrScenario, i, s.Name)
		}
		seen[s.Name] = true
		if s.Open == nil || s.Size < 0 {
			return nil, fmt.Errorf("%w: shard %s: no source or a negative size", ErrScenario, s.Name)
		}
		sizes[i] = s.Size
	}
	model, batch, val := sc.Model, sc.Batch, sc.Val.All()
	classifier := model == "mlp" || strings.HasPrefix(model, "mlp:")
	build := func(repeat int) (trainer.Task, error) {
		t := trainer.Task{Val: val, Classifier: classifier, NewModel: func(seed uint64) (nn.Model, error) {
			return trainer.NewModel(model, batch, seed)
		}}
		for _, s := range shards {
			src, err := s.Open(repeat)
			if err != nil {
				return trainer.Task{}, fmt.Errorf("shard %s: %w", s.Name, err)
			}
			if src == nil || src.Len() == 0 {
				return trainer.Task{}, fmt.Errorf("shard %s is empty", s.Name)
			}
			t.Sources = append(t.Sources, src)
		}
		return t, nil
	}
	task, err := build(0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	r := &Retrainer{players: n, sizes: sizes, run: run, task: build}
	if r.empty, err = evalInitial(task, sc.Seed); err != nil {
		return nil, err
	}
	return r, nil
}
