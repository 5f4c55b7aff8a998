package trainer

import (
	"context"
	"testing"
)

// The steps a worker takes while its update travels land on θ_{t+1} unchanged (θ_local − θ_sent
// is carried), the global replica is exactly OuterStep's, and without steps in between the carry
// is OuterStep itself.
func TestOuterStepCarryKeepsTheOverlapSteps(t *testing.T) {
	task, _, err := BuildTask(smallMLPSpec(1, "iid"))
	if err != nil {
		t.Fatal(err)
	}
	newWorker := func() *Worker {
		m, err := task.NewModel(3)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWorker(m, task.Sources[0], WorkerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	a, b := newWorker(), newWorker()
	if err := a.OuterStepCarry(make([]float32, len(a.Global()))); err == nil {
		t.Fatal("OuterStepCarry without MarkSent was accepted")
	}
	if _, err := a.InnerSteps(3); err != nil {
		t.Fatal(err)
	}
	agg := a.PseudoGradient(nil)
	a.MarkSent()
	sent := append([]float32(nil), a.Model().Params()...)
	if _, err := a.InnerSteps(2); err != nil {
		t.Fatal(err)
	}
	progress := make([]float32, len(sent))
	for i, v := range a.Model().Params() {
		progress[i] = v - sent[i]
	}
	if err := a.OuterStepCarry(agg); err != nil {
		t.Fatal(err)
	}
	if err := b.OuterStep(agg); err != nil {
		t.Fatal(err)
	}
	if ParamsHash(a.Global()) != ParamsHash(b.Global()) {
		t.Fatal("OuterStepCarry changed the global replica")
	}
	for i, v := range a.Model().Params() {
		if want := a.Global()[i] + progress[i]; v != want {
			t.Fatalf("param %d: local %v, want θ_{t+1} + progress = %v", i, v, want)
		}
	}
	// No steps between MarkSent and the carry: exactly OuterStep.
	a.MarkSent()
	if err := a.OuterStepCarry(agg); err != nil {
		t.Fatal(err)
	}
	if err := b.OuterStep(agg); err != nil {
		t.Fatal(err)
	}
	if ParamsHash(a.Model().Params()) != ParamsHash(b.Model().Params()) || ParamsHash(a.Global()) != ParamsHash(b.Global()) {
		t.Fatal("a carry of nothing differs from OuterStep")
	}
	// Discard forgets a pending MarkSent.
	a.MarkSent()
	a.Discard()
	if err := a.OuterStepCarry(agg); err == nil {
		t.Fatal("OuterStepCarry after Discard was accepted")
	}
}

// With overlap every worker still takes H steps a round, replicas stay bit-identical, and the
// model still learns.
func TestRunWithOverlap(t *testing.T) {
	task, _, err := BuildTask(smallMLPSpec(3, "dirichlet:0.5"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), task, RunConfig{InnerSteps: 10, Overlap: 3, Rounds: 6, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if sum.SamplesPerWorker != 6*10*32 {
		t.Fatalf("samples per worker %d, want %d", sum.SamplesPerWorker, 6*10*32)
	}
	if *sum.FinalValAccuracy < 0.6 {
		t.Fatalf("accuracy %.3f with overlap", *sum.FinalValAccuracy)
	}
	for _, bad := range []RunConfig{{InnerSteps: 10, Overlap: 10}, {InnerSteps: 10, Overlap: -1}, {Mode: ModeDDP, Overlap: 2}} {
		if err := bad.Validate(); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
}
