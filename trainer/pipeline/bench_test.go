package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// BenchmarkStagePipeline trains gpt:4-64-4-32 (bytes) as S in-process stages, a step being 4
// micro-batches of 3 sequences under 1F1B, and reports:
//
//   - tokens/s: the group's training throughput;
//   - fwd-B/step, bwd-B/step: frame bytes stage 0 sends forward (activations) and receives
//     backward (their gradients) per step, and tie-B/step the tied wte's exchange (each way);
//   - util-sN: stage N's busy time (passes, coding, AdamW) over the step's wall time;
//   - state-B/stage, state-B/whole: the largest stage's parameters and AdamW moments against
//     the whole model's (12 bytes a parameter; the last stage counts its copy of wte).
//
// S=1 is the whole model in one stage (no frames), and "whole" the GPT itself taking the step's
// 12 sequences in one graph, for comparison.
func BenchmarkStagePipeline(b *testing.B) {
	cfg, err := nn.ParseGPTName("gpt:4-64-4-32")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Batch, cfg.Vocab = 3, 256
	const M = 4
	b.Run("whole", func(b *testing.B) {
		wcfg := cfg
		wcfg.Batch = M * cfg.Batch
		m, err := nn.NewGPT(wcfg)
		if err != nil {
			b.Fatal(err)
		}
		opt, err := trainer.NewAdamW(len(m.Params()), trainer.AdamWConfig{LR: 1e-3, ClipNorm: 1})
		if err != nil {
			b.Fatal(err)
		}
		batch := randomBatch(rand.New(rand.NewPCG(1, 1)), cfg, wcfg.Batch)
		grad := make([]float32, len(m.Params()))
		b.ResetTimer()
		start := time.Now()
		for k := 0; k < b.N; k++ {
			if _, err := m.Grad(batch, grad); err != nil {
				b.Fatal(err)
			}
			opt.StepAt(m.Params(), grad, k)
		}
		b.ReportMetric(float64(b.N*wcfg.Batch*cfg.Context)/time.Since(start).Seconds(), "tokens/s")
		b.ReportMetric(float64(StateBytes(len(m.Params()))), "state-B/whole")
	})
	for _, S := range []int{1, 2, 4} {
		for _, codec := range []string{"fp32", "q8"} {
			if S == 1 && codec == "q8" {
				continue
			}
			b.Run(fmt.Sprintf("S=%d/%s", S, codec), func(b *testing.B) {
				stages := newStages(b, cfg, S, Config{Micro: M, Codec: compress.MustParse(codec), AdamW: trainer.AdamWConfig{LR: 1e-3, ClipNorm: 1}})
				r := rand.New(rand.NewPCG(1, 1))
				batch := randomBatch(r, cfg, M*cfg.Batch)
				links := NewLocalGroup(S)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				busy := make([]time.Duration, S)
				var last StepStats
				errs := make([]error, S)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for s := range stages {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for k := 0; k < b.N; k++ {
							st, err := stages[s].Step(ctx, links[s], k, batch)
							if err != nil {
								errs[s] = err
								cancel()
								return
							}
							busy[s] += st.Busy
							if s == 0 {
								last = st
							}
						}
					}()
				}
				wg.Wait()
				wall := time.Since(start)
				b.StopTimer()
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
				tokens := float64(b.N * M * cfg.Batch * cfg.Context)
				b.ReportMetric(tokens/wall.Seconds(), "tokens/s")
				b.ReportMetric(float64(last.Sent[Activation]), "fwd-B/step")
				b.ReportMetric(float64(last.Received[Gradient]), "bwd-B/step")
				b.ReportMetric(float64(last.Sent[Tie]), "tie-B/step")
				for s := range stages {
					b.ReportMetric(busy[s].Seconds()/wall.Seconds(), fmt.Sprintf("util-s%d", s))
				}
				var largest int64
				for _, st := range stages {
					largest = max(largest, st.StateBytes())
				}
				b.ReportMetric(float64(largest), "state-B/stage")
				b.ReportMetric(float64(StateBytes(stages[0].Model().WholeSize())), "state-B/whole")
			})
		}
	}
}

// TestStateBytes pins the memory figure: a stage holds its own parameters and moments, the last
// stage also a copy of wte.
func TestStateBytes(t *testing.T) {
	cfg, err := nn.ParseGPTName("gpt:4-64-4-32")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Batch = 1
	whole := StateBytes(stagesOf(t, cfg, 1)[0].Model().WholeSize())
	for _, S := range []int{1, 2, 4} {
		stages := stagesOf(t, cfg, S)
		var sum, largest int64
		for _, st := range stages {
			sum += st.StateBytes()
			largest = max(largest, st.StateBytes())
		}
		tie := int64(0)
		if S > 1 {
			tie = StateBytes(stages[0].Model().TiedLen())
		}
		if sum != whole+tie {
			t.Errorf("S=%d: stages hold %d bytes, want the whole model's %d + the tied copy's %d", S, sum, whole, tie)
		}
		t.Logf("S=%d: largest stage %d B of state, whole model %d B (%.2f×)", S, largest, whole, float64(largest)/float64(whole))
	}
}

func stagesOf(t testing.TB, cfg nn.GPTConfig, S int) []*Stage { return newStages(t, cfg, S, Config{}) }
