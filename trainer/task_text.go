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
	play, err := datasets.EmbeddedPlay()
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	vocab := datasets.NewVocab(play.Text())
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
	p := spec.Partition
	if strings.HasPrefix(p, "dirichlet") {
		return Task{}, TaskInfo{}, fmt.Errorf("partition %q needs labels; charlm takes iid or natural", p)
	}
	parts, pname, err := partition(spec, datasets.Samples{N: len(train), Groups: groups})
	if err != nil {
		return Task{}, TaskInfo{}, err
	}
	info := TaskInfo{Source: "embedded: " + play.Title, Partition: pname, TrainSamples: len(train)}
	task := Task{TokensPerSample: CharLMContext}
	for i, part := range parts {
		var toks []int
		var speakers []string
		var hashes []datasets.Hash
		for _, j := range part {
			toks = vocab.AppendEncode(toks, train[j].Text+"\n")
			speakers = append(speakers, train[j].Speaker)
			hashes = append(hashes, datasets.HashText(train[j].Text))
		}
		fp := datasets.NewFingerprint(hashes)
		info.Fingerprints = append(info.Fingerprints, fp.Digest[:])
		src, err := NewTextSource(toks, CharLMContext, spec.Seed*1000003+uint64(i)+1)
		if err != nil {
			return Task{}, TaskInfo{}, fmt.Errorf("worker %d (%d speeches): %w", i, len(part), err)
		}
		task.Sources = append(task.Sources, src)
		info.ShardSizes = append(info.ShardSizes, len(toks))
		info.ShardGroups = append(info.ShardGroups, uniqueSorted(speakers))
	}
	valToks := vocab.Encode(val.String())
	var starts []int
	for st := 0; st+CharLMContext+1 <= len(valToks); st += CharLMContext {
		if spec.ValSamples > 0 && len(starts) == spec.ValSamples {
			break
		}
		starts = append(starts, st)
	}
	TextBatch(&task.Val, valToks, CharLMContext, starts)
	info.ValSamples = len(starts)
	batch, v := spec.Batch, vocab.Size()
	task.NewModel = func(seed uint64) (nn.Model, error) {
		return nn.NewCharLM(nn.CharLMConfig{Vocab: v, Context: CharLMContext, Batch: batch, Seed: seed})
	}
	return task, info, nil
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
