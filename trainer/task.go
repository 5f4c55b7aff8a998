package trainer

import (
	"fmt"
	"strings"
	"sync"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer/nn"
)

// TaskSpec names a training task in the terms a user gives on the command line.
type TaskSpec struct {
	Model      string // "mlp", "mlp:784-256-10", "charlm" or "gpt:L-D-NH-T" (e.g. "gpt:4-128-4-64", bytes)
	Workers    int    // number of shards
	Partition  string // "iid", "iid:W1,…", "dirichlet:ALPHA", "dirichlet-equal:ALPHA" or "natural"
	Seed       uint64
	DataDir    string // Fashion-MNIST directory; "" = system copy if installed, else embedded; "embedded" = embedded
	Batch      int    // per-worker batch size; 0 = the model's default
	ValSamples int    // cap on validation samples; 0 = all
	// LabelNoise is, per shard, the fraction of its samples given a wrong label (image tasks
	// only); empty = none, else one value per shard.
	LabelNoise []float64
	// BatchSeed seeds the order in which each shard's samples are drawn; 0 means Seed's. The
	// shards, their label noise and θ_0 stay Seed's: another BatchSeed is the same cohort with
	// other batches (what an audit repeats its retrainings with).
	BatchSeed uint64
}

// sourceSeed is the seed of shard i's batch order.
func (spec TaskSpec) sourceSeed(i int) uint64 {
	s := spec.Seed
	if spec.BatchSeed != 0 {
		s = spec.BatchSeed
	}
	return s*1000003 + uint64(i) + 1
}

// TaskInfo describes the data a task was built from.
type TaskInfo struct {
	Source       string // where the data came from
	Partition    string
	TrainSamples int
	ValSamples   int
	ShardSizes   []int
	ShardGroups  [][]string // natural partition: the speakers of each shard
	// Shards holds each shard's sample indices into the training set (image tasks).
	Shards [][]int
	// Fingerprints holds each shard's data fingerprint (datasets.Fingerprint digest): the same
	// samples give the same fingerprint whatever their order or owner's name.
	Fingerprints [][]byte
}

// BuildTask loads the data, partitions it among spec.Workers and returns the task.
func BuildTask(spec TaskSpec) (Task, TaskInfo, error) {
	if spec.Workers < 1 {
		return Task{}, TaskInfo{}, fmt.Errorf("workers %d must be ≥ 1", spec.Workers)
	}
	if spec.Batch < 0 || spec.ValSamples < 0 {
		return Task{}, TaskInfo{}, fmt.Errorf("batch %d and val-samples %d must be ≥ 0", spec.Batch, spec.ValSamples)
	}
	if len(spec.LabelNoise) > 0 {
		if len(spec.LabelNoise) != spec.Workers {
			return Task{}, TaskInfo{}, fmt.Errorf("label noise: %d values for %d shards", len(spec.LabelNoise), spec.Workers)
		}
		for i, f := range spec.LabelNoise {
			if !(f >= 0 && f <= 1) {
				return Task{}, TaskInfo{}, fmt.Errorf("label noise of shard %d: %v is not a fraction in [0,1]", i+1, f)
			}
		}
		if !(spec.Model == "mlp" || strings.HasPrefix(spec.Model, "mlp:")) {
			return Task{}, TaskInfo{}, fmt.Errorf("label noise: model %s has no labels (image models only)", spec.Model)
		}
	}
	switch {
	case spec.Model == "mlp" || strings.HasPrefix(spec.Model, "mlp:"):
		return buildMLPTask(spec)
	case spec.Model == "charlm" || strings.HasPrefix(spec.Model, "charlm:"):
		return buildCharLMTask(spec)
	case strings.HasPrefix(spec.Model, "gpt:"):
		return buildGPTTask(spec)
	}
	return Task{}, TaskInfo{}, fmt.Errorf("unknown model %q (want mlp, mlp:784-256-10, charlm or gpt:L-D-NH-T)", spec.Model)
}

func buildMLPTask(spec TaskSpec) (Task, TaskInfo, error) {
	var sizes []int
	if spec.Model != "mlp" {
		s, err := nn.ParseMLPName(spec.Model)
		if err != nil {
			return Task{}, TaskInfo{}, err
		}
		sizes = s
	}
	train, test, source, err := LoadFashionMNIST(spec.DataDir)
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	if sizes != nil && (sizes[0] != train.Features() || sizes[len(sizes)-1] != train.Classes) {
		return Task{}, TaskInfo{}, fmt.Errorf("model %s does not fit %s: %d features, %d classes", spec.Model, source, train.Features(), train.Classes)
	}
	parts, pname, err := partition(spec, datasets.Samples{Labels: train.IntLabels(), Classes: train.Classes})
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	info := TaskInfo{Source: source, Partition: pname, TrainSamples: train.Len()}
	task := Task{Classifier: true, TokensPerSample: 1}
	for i, p := range parts {
		src, err := NewImageSource(train, p, spec.sourceSeed(i))
		if err != nil {
			return Task{}, TaskInfo{}, fmt.Errorf("worker %d: %w", i, err)
		}
		if len(spec.LabelNoise) > 0 {
			if err := src.WithLabelNoise(spec.LabelNoise[i], train.Classes, spec.Seed*1000033+uint64(i)+1); err != nil {
				return Task{}, TaskInfo{}, fmt.Errorf("worker %d: %w", i, err)
			}
		}
		task.Sources = append(task.Sources, src)
		info.ShardSizes = append(info.ShardSizes, len(p))
		info.Shards = append(info.Shards, p)
		fp := datasets.NewFingerprint(train.SampleHashes(p))
		info.Fingerprints = append(info.Fingerprints, fp.Digest[:])
	}
	nval := test.Len()
	if spec.ValSamples > 0 && spec.ValSamples < nval {
		nval = spec.ValSamples
	}
	idx := make([]int, nval)
	for i := range idx {
		idx[i] = i
	}
	ImageBatch(&task.Val, test, idx)
	info.ValSamples = nval
	batch := spec.Batch
	task.NewModel = func(seed uint64) (nn.Model, error) {
		return nn.NewMLP(nn.MLPConfig{Sizes: sizes, Batch: batch, Seed: seed})
	}
	return task, info, nil
}

// partition splits the samples among spec.Workers shards by spec.Partition ("" means iid).
func partition(spec TaskSpec, samples datasets.Samples) ([][]int, string, error) {
	ps := spec.Partition
	if ps == "" {
		ps = "iid"
	}
	p, err := datasets.ParsePartition(ps)
	if err != nil {
		return nil, "", err
	}
	parts, err := p.Split(samples, spec.Workers, spec.Seed)
	if err != nil {
		return nil, "", err
	}
	return parts, p.String(), nil
}

// EmbeddedData is the DataDir value that selects the embedded Fashion-MNIST subset even when the
// full set is installed.
const EmbeddedData = "embedded"

var fmnistCache struct {
	sync.Mutex
	m map[string][3]any
}

// LoadFashionMNIST loads (once per process and directory) the Fashion-MNIST splits: dir as in
// TaskSpec.DataDir.
func LoadFashionMNIST(dir string) (train, test *datasets.Images, source string, err error) {
	fmnistCache.Lock()
	defer fmnistCache.Unlock()
	if v, ok := fmnistCache.m[dir]; ok {
		return v[0].(*datasets.Images), v[1].(*datasets.Images), v[2].(string), nil
	}
	if dir == EmbeddedData {
		train, test, err = datasets.EmbeddedFashionMNIST()
		source = "embedded Fashion-MNIST subset"
	} else {
		train, test, source, err = datasets.FashionMNIST(dir)
	}
	if err != nil {
		return nil, nil, "", err
	}
	if fmnistCache.m == nil {
		fmnistCache.m = map[string][3]any{}
	}
	fmnistCache.m[dir] = [3]any{train, test, source}
	return train, test, source, nil
}

// NewModel builds the model a spec names ("mlp", "mlp:784-256-10", "charlm" or "gpt:L-D-NH-T", a
// byte-level GPT with vocabulary 256) with the given
// batch size (0 = the model's default) and initialisation seed: every replica of a cohort calls it
// with the same arguments and gets bit-identical parameters.
func NewModel(spec string, batch int, seed uint64) (nn.Model, error) {
	switch {
	case spec == "mlp" || strings.HasPrefix(spec, "mlp:"):
		var sizes []int
		if spec != "mlp" {
			s, err := nn.ParseMLPName(spec)
			if err != nil {
				return nil, err
			}
			sizes = s
		}
		return nn.NewMLP(nn.MLPConfig{Sizes: sizes, Batch: batch, Seed: seed})
	case spec == "charlm":
		play, err := datasets.EmbeddedPlay()
		if err != nil {
			return nil, err
		}
		return nn.NewCharLM(nn.CharLMConfig{Vocab: datasets.NewVocab(play.Text()).Size(), Context: CharLMContext, Batch: batch, Seed: seed})
	case strings.HasPrefix(spec, "gpt:"):
		cfg, err := nn.ParseGPTName(spec)
		if err != nil {
			return nil, err
		}
		if cfg.Vocab != 0 && cfg.Vocab != 256 {
			return nil, fmt.Errorf("model %s: text tasks are byte-level, want vocabulary 256", spec)
		}
		cfg.Batch, cfg.Seed = batch, seed
		return nn.NewGPT(cfg)
	}
	return nil, fmt.Errorf("unknown model %q (want mlp, mlp:784-256-10, charlm or gpt:L-D-NH-T)", spec)
}
