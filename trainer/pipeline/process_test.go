package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// processTask is the one-worker task of a group in processes: tinyTask's data with one shard.
func processTask(t testing.TB) trainer.Task {
	t.Helper()
	task, _, err := trainer.BuildTask(trainer.TaskSpec{Model: "gpt:3-32-2-16", DataDir: trainer.EmbeddedData, Workers: 1, Seed: 3, Batch: 4, ValSamples: 30})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// processConfigs are the S stages' configurations of tinyRun's run (with micro micro-batches),
// each first and last stage reading its own copy of the data.
func processConfigs(t testing.TB, S, micro, rounds int, dir string) []ProcessConfig {
	t.Helper()
	run := tinyRun("", 0)
	mc, err := nn.ParseGPTName("gpt:3-32-2-16")
	if err != nil {
		t.Fatal(err)
	}
	mc.Batch, mc.Seed = 4, run.Seed
	cfgs := make([]ProcessConfig, S)
	for s := range cfgs {
		c := ProcessConfig{Model: mc, Stage: s, Stages: S, Pipeline: Config{Micro: micro, AdamW: run.Inner},
			Outer: run.Outer, Rounds: rounds, InnerSteps: run.InnerSteps, Digest: [32]byte{byte(S), byte(micro)}}
		if s == 0 || s == S-1 {
			task := processTask(t)
			c.Source = task.Sources[0].(PositionedSource)
			c.Val = task.Val
		}
		if dir != "" {
			c.Checkpoint = filepath.Join(dir, fmt.Sprint(s))
			if err := os.MkdirAll(c.Checkpoint, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cfgs[s] = c
	}
	return cfgs
}

// runProcesses runs the stages of cfgs at once over in-process links; the first failure cancels
// the others.
func runProcesses(ctx context.Context, cfgs []ProcessConfig) ([]*ProcessSummary, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	links := NewLocalGroup(len(cfgs))
	out := make([]*ProcessSummary, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for s := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out[s], errs[s] = RunProcess(ctx, links[s], cfgs[s]); errs[s] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// TestRunProcessMatchesRunDiLoCo: S stages, each run on its own (as a process would) over links,
// train to RunDiLoCo's bits with one worker: every round's train and validation loss and the
// final model hash, reported by the last stage; several micro-batches too (the same sums in the
// same order).
func TestRunProcessMatchesRunDiLoCo(t *testing.T) {
	for _, tc := range []struct{ S, M int }{{1, 1}, {2, 1}, {3, 1}, {2, 2}} {
		t.Run(fmt.Sprintf("S%d-M%d", tc.S, tc.M), func(t *testing.T) {
			run := tinyRun("", 0)
			want, err := RunDiLoCo(context.Background(), processTask(t), RunConfig{RunConfig: run, Stages: tc.S, Micro: tc.M})
			if err != nil {
				t.Fatal(err)
			}
			cfgs := processConfigs(t, tc.S, tc.M, run.Rounds, "")
			var rounds []trainer.RoundStats
			cfgs[tc.S-1].Progress = func(rs trainer.RoundStats) { rounds = append(rounds, rs) }
			got, err := runProcesses(context.Background(), cfgs)
			if err != nil {
				t.Fatal(err)
			}
			last := got[tc.S-1]
			if len(rounds) != run.Rounds || len(last.History) != run.Rounds {
				t.Fatalf("%d progress calls and %d rounds recorded, want %d", len(rounds), len(last.History), run.Rounds)
			}
			for r, h := range want.History {
				g := last.History[r]
				if g.TrainLoss != h.TrainLoss || g.ValLoss != h.ValLoss || g.ValAccuracy != h.ValAccuracy {
					t.Errorf("round %d: %+v, RunDiLoCo %+v", r+1, g, h)
				}
			}
			if last.ModelHash != want.ModelHash || last.FinalValLoss != want.FinalValLoss {
				t.Errorf("hash %s val loss %v, RunDiLoCo %s %v", last.ModelHash, last.FinalValLoss, want.ModelHash, want.FinalValLoss)
			}
			for s, g := range got {
				ws := want.StageStats[s]
				if g.Range != ws.Range || g.Parameters != ws.Parameters || g.StateBytes != ws.StateBytes {
					t.Errorf("stage %d: range %v, %d params, %d B; RunDiLoCo %v, %d, %d B", s, g.Range, g.Parameters, g.StateBytes, ws.Range, ws.Parameters, ws.StateBytes)
				}
			}
		})
	}
}

// TestRunProcessResumes: a group stopped after round 2 (its checkpoints saved) and restarted
// for 4 rounds ends at the bits of a run of 4 rounds uninterrupted; with one stage's latest
// checkpoint gone (killed between two others' saves) the group agrees on the round before.
func TestRunProcessResumes(t *testing.T) {
	const S = 3
	want, err := runProcesses(context.Background(), processConfigs(t, S, 1, 4, ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, lose := range []bool{false, true} {
		t.Run(fmt.Sprintf("lost-latest-%v", lose), func(t *testing.T) {
			dir := t.TempDir()
			if _, err := runProcesses(context.Background(), processConfigs(t, S, 1, 2, dir)); err != nil {
				t.Fatal(err)
			}
			from := 2
			if lose { // stage 1 died before saving round 2: it has round 1 only
				latest, prev := checkpointFiles(filepath.Join(dir, "1"), 1, S)
				if err := os.Rename(prev, latest); err != nil {
					t.Fatal(err)
				}
				from = 1
			}
			got, err := runProcesses(context.Background(), processConfigs(t, S, 1, 4, dir))
			if err != nil {
				t.Fatal(err)
			}
			for s, g := range got {
				if g.ResumedFrom != from {
					t.Errorf("stage %d resumed after round %d, want %d", s, g.ResumedFrom, from)
				}
			}
			if g, w := got[S-1], want[S-1]; g.ModelHash != w.ModelHash || g.FinalValLoss != w.FinalValLoss {
				t.Errorf("resumed: hash %s val loss %v; uninterrupted %s %v", g.ModelHash, g.FinalValLoss, w.ModelHash, w.FinalValLoss)
			}
		})
	}
}

// TestRunProcessRefuses: a stage under other settings than its neighbours, or resuming from a
// checkpoint saved under other settings, is refused before training; a stage whose neighbour
// stops fails instead of waiting.
func TestRunProcessRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfgs := processConfigs(t, 2, 1, 1, "")
	cfgs[1].Digest[5] = 1
	if _, err := runProcesses(ctx, cfgs); !errors.Is(err, ErrConfig) {
		t.Errorf("stages under other settings: %v, want ErrConfig", err)
	}

	cfgs = processConfigs(t, 3, 1, 1, "")
	cfgs[2].DataDigest[0] = 1 // the last stage reads other data than the first
	if _, err := runProcesses(ctx, cfgs); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "other data") {
		t.Errorf("the first and the last stage on other data: %v, want ErrConfig", err)
	}

	dir := t.TempDir()
	if _, err := runProcesses(ctx, processConfigs(t, 2, 1, 1, dir)); err != nil {
		t.Fatal(err)
	}
	cfgs = processConfigs(t, 2, 1, 2, dir)
	for s := range cfgs {
		cfgs[s].Digest[7] = 1
	}
	if _, err := runProcesses(ctx, cfgs); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("a checkpoint of other settings: %v, want ErrCheckpoint", err)
	}

	// Stage 1 of 2 never runs: stage 0 stops with its context's end, not later.
	links := NewLocalGroup(2)
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if _, err := RunProcess(short, links[0], processConfigs(t, 2, 1, 1, "")[0]); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a stage alone: %v, want its deadline", err)
	}
}

// TestStageCheckpointRoundTrip: a checkpoint decodes to what was encoded; damaged bytes are
// refused.
func TestStageCheckpointRoundTrip(t *testing.T) {
	c := &StageCheckpoint{Stage: 1, Stages: 3, Round: 7, Step: 70, Samples: 280, AdamT: 70, Digest: [32]byte{9},
		Source: []byte("pcg state"), Params: []float32{1, 2, 3}, AdamM: []float32{4, 5, 6}, AdamV: []float32{7, 8, 9}, Momentum: []float32{0.5, 0.25}}
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalStageCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(*got) != fmt.Sprint(*c) {
		t.Errorf("decoded %+v, want %+v", *got, *c)
	}
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)-5],
		"padded":    append(append([]byte(nil), b...), 0),
		"flipped":   func() []byte { x := append([]byte(nil), b...); x[len(x)/2] ^= 1; return x }(),
		"empty":     nil,
	} {
		if _, err := UnmarshalStageCheckpoint(bad); !errors.Is(err, ErrCheckpoint) {
			t.Errorf("%s: %v, want ErrCheckpoint", name, err)
		}
	}
}

// FuzzStageCheckpoint: any bytes decode to a checkpoint or an ErrCheckpoint, never a panic, and
// what decodes encodes back to the same bytes.
func FuzzStageCheckpoint(f *testing.F) {
	c := &StageCheckpoint{Stage: 0, Stages: 2, Round: 3, Step: 9, Samples: 36, AdamT: 9,
		Source: []byte{1, 2, 3}, Params: []float32{1, -2}, AdamM: []float32{0.1, 0.2}, AdamV: []float32{0.01, 0.02}, Momentum: []float32{3}}
	b, err := c.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:stageCkptHeader])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := UnmarshalStageCheckpoint(b)
		if err != nil {
			if !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("error %v does not wrap ErrCheckpoint", err)
			}
			return
		}
		out, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != string(b) {
			t.Fatal("decoded checkpoint encodes to other bytes")
		}
	})
}
