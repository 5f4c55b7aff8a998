package trainer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer/nn"
)

// CharLMContext is the context length of the character model tasks.
const CharLMContext = 64

// buildCharLMTask trains the character model on the embedded play (As You Like It). Every tenth
// speech is held out for validation; the others are split among workers (natural: by speaker).
func buildCharLMTask(spec TaskSpec) (Task, TaskInfo, error) {
	if spec.Model != "charlm" {
		return Task{}, TaskInfo{}, fmt.Errorf("unknown model %q (charlm takes no options yet)", spec.Model)
	}
	if spec.DataDir != "" && spec.DataDir != EmbeddedData {
		return Task{}, TaskInfo{}, fmt.Errorf("charlm trains on the embedded play; --data is for Fashion-MNIST")
	}
	p := spec.Partition
	if strings.HasPrefix(p, "dirichlet") {
		return Task{}, TaskInfo{}, fmt.Errorf("partition %q needs labels; charlm takes iid or natural", p)
	}
	play, err := datasets.EmbeddedPlay()
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	vocab := datasets.NewVocab(play.Text())
	task, info, err := playTask(spec, play, CharLMContext, vocab.Encode)
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	info.Source = "embedded: " + play.Title
	batch, v := spec.Batch, vocab.Size()
	task.NewModel = func(seed uint64) (nn.Model, error) {
		return nn.NewCharLM(nn.CharLMConfig{Vocab: v, Context: CharLMContext, Batch: batch, Seed: seed})
	}
	return task, info, nil
}

// playTask builds a language-model task (all but the model) from a play: every tenth speech is
// held out for validation, the others are split among spec.Workers (iid, or natural: by
// speaker); encode turns text into the model's tokens, windows are context+1 tokens.
func playTask(spec TaskSpec, play *datasets.Play, context int, encode func(string) []int) (Task, TaskInfo, error) {
	var train []datasets.Speech
	var val strings.Builder
	for i, s := range play.Speeches {
		if i%10 == 9 {
			val.WriteString(s.Text)
			val.WriteByte('\n')
			continue
		}
		train = append(train, s)
	}
	groups := make([]string, len(train))
	for i, s := range train {
		groups[i] = s.Speaker
	}
	parts, pname, err := partition(spec, datasets.Samples{N: len(train), Groups: groups})
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	info := TaskInfo{Partition: pname, TrainSamples: len(train)}
	task := Task{TokensPerSample: context}
	for i, part := range parts {
		var toks []int
		var speakers []string
		var hashes []datasets.Hash
		for _, j := range part {
			toks = append(toks, encode(train[j].Text+"\n")...)
			speakers = append(speakers, train[j].Speaker)
			hashes = append(hashes, datasets.HashText(train[j].Text))
		}
		fp := datasets.NewFingerprint(hashes)
		info.Fingerprints = append(info.Fingerprints, fp.Digest[:])
		src, err := NewTextSource(toks, context, spec.sourceSeed(i))
		if err != nil {
			return Task{}, TaskInfo{}, fmt.Errorf("worker %d (%d speeches): %w", i, len(part), err)
		}
		task.Sources = append(task.Sources, src)
		info.ShardSizes = append(info.ShardSizes, len(toks))
		info.ShardGroups = append(info.ShardGroups, uniqueSorted(speakers))
	}
	info.ValSamples = valWindows(&task.Val, encode(val.String()), context, spec.ValSamples)
	return task, info, nil
}

// valWindows fills val with consecutive, non-overlapping windows of context+1 tokens of toks (at
// most max of them; 0: all) and returns how many.
func valWindows(val *nn.Batch, toks []int, context, max int) int {
	var starts []int
	for st := 0; st+context+1 <= len(toks); st += context {
		if max > 0 && len(starts) == max {
			break
		}
		starts = append(starts, st)
	}
	TextBatch(val, toks, context, starts)
	return len(starts)
}

func uniqueSorted(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}
