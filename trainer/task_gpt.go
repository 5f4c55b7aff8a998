package trainer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer/nn"
)

// ByteTokens returns text's raw bytes as token ids 0..255: the byte-level encoding of the GPT
// models (UTF-8 text needs no vocabulary; a multi-byte character is several tokens).
func ByteTokens(text []byte) []int {
	toks := make([]int, len(text))
	for i, b := range text {
		toks[i] = int(b)
	}
	return toks
}

// NewByteSource returns a source of windows of context+1 byte tokens of text (inputs the first
// context bytes, targets the next ones) at seeded random offsets. It is the seam through which any
// text feeds a byte-level language model.
func NewByteSource(text []byte, context int, seed uint64) (*TextSource, error) {
	return NewTextSource(ByteTokens(text), context, seed)
}

// buildGPTTask trains a byte-level GPT on the embedded play, split like the character model's task:
// every tenth speech is held out for validation, the others are split among workers (iid, or
// natural: by speaker).
func buildGPTTask(spec TaskSpec) (Task, TaskInfo, error) {
	cfg, err := nn.ParseGPTName(spec.Model)
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	if cfg.Vocab != 0 && cfg.Vocab != 256 {
		return Task{}, TaskInfo{}, fmt.Errorf("model %s: text tasks are byte-level, want vocabulary 256", spec.Model)
	}
	if strings.HasPrefix(spec.Partition, "dirichlet") {
		return Task{}, TaskInfo{}, fmt.Errorf("partition %q needs labels; gpt takes iid, natural (by speaker), speaker, play, contiguous or iid:CHUNK", spec.Partition)
	}
	if spec.DataDir != "" && spec.DataDir != EmbeddedData {
		return buildGPTTextTask(spec, cfg)
	}
	play, err := datasets.EmbeddedPlay()
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	task, info, err := playTask(spec, play, cfg.Context, func(s string) []int { return ByteTokens([]byte(s)) })
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	info.Source = "embedded: " + play.Title + " (bytes)"
	task.NewModel = gptModel(cfg, spec.Batch)
	return task, info, nil
}

// gptModel builds the task's GPT for a seed.
func gptModel(cfg nn.GPTConfig, batch int) func(seed uint64) (nn.Model, error) {
	cfg.Batch = batch
	return func(seed uint64) (nn.Model, error) {
		c := cfg
		c.Seed = seed
		return nn.NewGPT(c)
	}
}

// buildGPTTextTask trains a byte-level GPT on any UTF-8 text: spec.DataDir names a text file or a
// directory of .txt files (datasets.LoadTexts). The first 90 % of every document trains and the
// last 10 % validates (nanoGPT's split); the training text is split among the workers by
// spec.Partition: iid (lines dealt at random; iid:CHUNK deals CHUNK-byte pieces), contiguous,
// natural or speaker (by speaker, for speaker-tagged plays), play (a document per play).
func buildGPTTextTask(spec TaskSpec, cfg nn.GPTConfig) (Task, TaskInfo, error) {
	abs, err := filepath.Abs(spec.DataDir)
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	docs, err := datasets.LoadTexts(os.DirFS(filepath.Dir(abs)), filepath.Base(abs))
	if err != nil {
		return Task{}, TaskInfo{}, fmt.Errorf("--data %s: %w", spec.DataDir, err)
	}
	pspec := spec.Partition
	switch pspec {
	case "", "iid":
		pspec = "iid"
	case "natural":
		pspec = "speaker"
	}
	part, err := datasets.ParseTextPartition(pspec)
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	T := cfg.Context
	var trainDocs []datasets.Document
	var val []byte
	size := 0
	for _, d := range docs {
		tr, va, err := datasets.SplitText([]byte(d.Text), 0.9)
		if err != nil {
			return Task{}, TaskInfo{}, fmt.Errorf("--data %s: %s: %w", spec.DataDir, d.Name, err)
		}
		trainDocs = append(trainDocs, datasets.Document{Name: d.Name, Text: string(tr)})
		val = append(val, va...)
		size += len(d.Text)
	}
	shards, err := part.Split(trainDocs, spec.Workers, spec.Seed)
	if err != nil {
		return Task{}, TaskInfo{}, fmt.Errorf("--data %s: %w", spec.DataDir, err)
	}
	info := TaskInfo{Source: fmt.Sprintf("%s: %d files, %d bytes (bytes)", spec.DataDir, len(docs), size), Partition: part.String()}
	task := Task{TokensPerSample: T}
	for i, shard := range shards {
		var text []byte
		for _, d := range shard {
			text = append(text, d.Text...)
		}
		fp := datasets.TextFingerprint(shard)
		info.Fingerprints = append(info.Fingerprints, fp.Digest[:])
		src, err := NewByteSource(text, T, spec.sourceSeed(i))
		if err != nil {
			return Task{}, TaskInfo{}, fmt.Errorf("worker %d (%d bytes): %w", i, len(text), err)
		}
		task.Sources = append(task.Sources, src)
		info.ShardSizes = append(info.ShardSizes, len(text))
		info.TrainSamples += len(text) / T
	}
	info.ValSamples = valWindows(&task.Val, ByteTokens(val), T, spec.ValSamples)
	if info.ValSamples == 0 {
		return Task{}, TaskInfo{}, fmt.Errorf("--data %s: the last 10 %% (%d bytes) holds no validation window of %d bytes", spec.DataDir, len(val), T+1)
	}
	task.NewModel = gptModel(cfg, spec.Batch)
	return task, info, nil
}
