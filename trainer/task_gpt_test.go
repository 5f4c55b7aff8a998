package trainer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer/nn"
)

func TestByteTokens(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []int
	}{
		{"", []int{}},
		{"ab\n", []int{97, 98, 10}},
		{"é", []int{0xc3, 0xa9}}, // UTF-8 bytes, no vocabulary mapping
		{"\x00\xff", []int{0, 255}},
	} {
		if got := ByteTokens([]byte(tc.text)); !slices.Equal(got, tc.want) {
			t.Errorf("ByteTokens(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
	if _, err := NewByteSource([]byte("abc"), 3, 1); err == nil {
		t.Error("NewByteSource accepted a text shorter than context+1 bytes")
	}
	src, err := NewByteSource([]byte("hello, world"), 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	var b nn.Batch
	src.Next(&b, 3)
	if len(b.Tokens) != 12 || len(b.Y) != 12 {
		t.Fatalf("batch of %d tokens, %d targets, want 12", len(b.Tokens), len(b.Y))
	}
	for s := 0; s < 3; s++ {
		if !slices.Equal(b.Tokens[s*4+1:s*4+4], b.Y[s*4:s*4+3]) {
			t.Errorf("window %d: targets %v are not the inputs %v shifted by one", s, b.Y[s*4:s*4+4], b.Tokens[s*4:s*4+4])
		}
	}
}

func TestNewModelGPT(t *testing.T) {
	a, err := NewModel("gpt:2-32-2-16", 4, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewModel("gpt:2-32-2-16", 4, 7)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "gpt:2-32-2-16" || a.BatchSize() != 4 || !slices.Equal(a.Params(), b.Params()) {
		t.Errorf("NewModel gave %s batch %d; same seed equal params: %v", a.Name(), a.BatchSize(), slices.Equal(a.Params(), b.Params()))
	}
	if g, ok := a.(*nn.GPT); !ok || g.Vocab() != 256 {
		t.Errorf("NewModel gave %T, want a byte-level *nn.GPT", a)
	}
	for _, bad := range []string{"gpt:2-32-3-16", "gpt:2-32-2-16-v50", "gpt"} {
		if _, err := NewModel(bad, 4, 7); err == nil {
			t.Errorf("NewModel(%q) accepted", bad)
		}
	}
}

func TestBuildTaskGPT(t *testing.T) {
	task, info, err := BuildTask(TaskSpec{Model: "gpt:1-16-2-16", Workers: 2, Partition: "natural", Seed: 1, Batch: 2, ValSamples: 8})
	if err != nil {
		t.Fatal(err)
	}
	if len(task.Sources) != 2 || task.TokensPerSample != 16 || info.ValSamples != 8 || len(task.Val.Tokens) != 8*16 {
		t.Fatalf("task: %d sources, %d tokens per sample, %d val samples (%d tokens)", len(task.Sources), task.TokensPerSample, info.ValSamples, len(task.Val.Tokens))
	}
	m, err := task.NewModel(3)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "gpt:1-16-2-16" || m.BatchSize() != 2 {
		t.Fatalf("task model %s batch %d", m.Name(), m.BatchSize())
	}
	var b nn.Batch
	task.Sources[0].Next(&b, m.BatchSize())
	grad := make([]float32, len(m.Params()))
	if _, err := m.Grad(b, grad); err != nil {
		t.Fatal(err)
	}
	if _, _, n, err := m.Eval(task.Val); err != nil || n != 8*16 {
		t.Fatalf("Eval: %d positions, %v", n, err)
	}
	for _, tc := range []struct {
		spec TaskSpec
		want string
	}{
		{TaskSpec{Model: "gpt:1-16-3-16", Workers: 2}, "multiple"},
		{TaskSpec{Model: "gpt:1-16-2-16-v96", Workers: 2}, "byte-level"},
		{TaskSpec{Model: "gpt:1-16-2-16", Workers: 2, Partition: "dirichlet:0.5"}, "needs labels"},
		{TaskSpec{Model: "gpt:1-16-2-16", Workers: 2, DataDir: "/nonexistent/dir"}, "--data /nonexistent/dir"},
	} {
		if _, _, err := BuildTask(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("BuildTask(%+v) error = %v, want mention of %q", tc.spec, err, tc.want)
		}
	}
}

// TestGPTLossFallsWithAdamW: 50 AdamW steps on a repeated text take the loss well below its start.
func TestGPTLossFallsWithAdamW(t *testing.T) {
	text := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog. ", 40))
	if path := os.Getenv("COHORT_TINYSHAKESPEARE"); path != "" && !testing.Short() {
		// Optional: a real corpus (Tiny Shakespeare's input.txt), its first 20 kB.
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		text = data[:min(len(data), 20000)]
	}
	m, err := NewModel("gpt:2-32-2-16", 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewByteSource(text, 16, 2)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := NewAdamW(len(m.Params()), AdamWConfig{LR: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	grad := make([]float32, len(m.Params()))
	var b nn.Batch
	var first, last float64
	const steps = 50
	for s := 0; s < steps; s++ {
		src.Next(&b, m.BatchSize())
		loss, err := m.Grad(b, grad)
		if err != nil {
			t.Fatal(err)
		}
		opt.Step(m.Params(), grad)
		if s == 0 {
			first = float64(loss)
		}
		if s >= steps-5 {
			last += float64(loss) / 5
		}
	}
	t.Logf("gpt:2-32-2-16 loss %.3f → %.3f over %d AdamW steps", first, last, steps)
	// From ln 256 ≈ 5.5 (uniform over bytes) to under 3.5: the model has learnt the text's
	// characters and some of their order.
	if first < 5 || last > 3.5 {
		t.Errorf("loss %.3f → %.3f (mean of the last 5 steps), want ≈ 5.5 → < 3.5", first, last)
	}
}

// TestGPTTaskFromTextFiles: any UTF-8 text trains a byte-level GPT: the first 90 % of each file
// trains (split among workers by speaker here), the last 10 % validates; bad text is refused
// before any model is built.
func TestGPTTaskFromTextFiles(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := 0; i < 120; i++ {
		fmt.Fprintf(&b, "%s:\nSpeech number %d, spoken with some words in it.\n\n", []string{"ROMEO", "JULIET", "NURSE", "FRIAR"}[i%4], i)
	}
	path := filepath.Join(dir, "play.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	task, info, err := BuildTask(TaskSpec{Model: "gpt:1-16-2-8", Workers: 2, Partition: "natural", Seed: 1, DataDir: path, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(task.Sources) != 2 || info.ValSamples == 0 || info.Partition != "speaker" {
		t.Fatalf("%d sources, info %+v", len(task.Sources), info)
	}
	total := info.ShardSizes[0] + info.ShardSizes[1]
	if want := len(b.String()) * 9 / 10; total < want-200 || total > want+200 {
		t.Errorf("shards hold %d bytes, want about 90 %% of %d", total, len(b.String()))
	}
	m, err := task.NewModel(1)
	if err != nil || m.Name() != "gpt:1-16-2-8" {
		t.Fatalf("model %v, %v", m, err)
	}
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("ROMEO:\nhello \xff\n"), 0o644)
	if _, _, err := BuildTask(TaskSpec{Model: "gpt:1-16-2-8", Workers: 1, DataDir: bad}); !errors.Is(err, datasets.ErrMalformed) {
		t.Errorf("invalid UTF-8: %v, want datasets.ErrMalformed", err)
	}
}

// TestTextSourcePosition: a source restored to a saved position draws the batches that followed
// it; a position that is not one is refused.
func TestTextSourcePosition(t *testing.T) {
	text := []byte(strings.Repeat("to be or not to be, that is the question. ", 20))
	a, err := NewByteSource(text, 8, 3)
	if err != nil {
		t.Fatal(err)
	}
	var b1, b2 nn.Batch
	a.Next(&b1, 4)
	pos, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	a.Next(&b1, 4)
	b, err := NewByteSource(text, 8, 99)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.UnmarshalBinary(pos); err != nil {
		t.Fatal(err)
	}
	b.Next(&b2, 4)
	if !slices.Equal(b1.Tokens, b2.Tokens) || !slices.Equal(b1.Y, b2.Y) {
		t.Errorf("restored source drew %v, want %v", b2.Tokens, b1.Tokens)
	}
	if err := b.UnmarshalBinary([]byte("nope")); err == nil {
		t.Error("a position of 4 stray bytes was accepted")
	}
}
