package trainer

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/trainer/nn"
)

func smallMLPSpec(workers int, partition string) TaskSpec {
	return TaskSpec{Model: "mlp:784-64-10", Workers: workers, Partition: partition, Seed: 7, Batch: 32, ValSamples: 500, DataDir: EmbeddedData}
}

func TestDiLoCoLearnsFashionMNIST(t *testing.T) {
	task, info, err := BuildTask(smallMLPSpec(4, "dirichlet:0.5"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.ShardSizes) != 4 || info.ValSamples != 500 {
		t.Fatalf("info = %+v", info)
	}
	sum, err := Run(context.Background(), task, RunConfig{InnerSteps: 10, Rounds: 6, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	first, last := sum.History[0], sum.History[len(sum.History)-1]
	if last.ValLoss >= first.ValLoss || *sum.FinalValAccuracy < 0.65 {
		t.Fatalf("DiLoCo did not learn: val loss %.3f → %.3f, accuracy %.3f (chance 0.1)", first.ValLoss, last.ValLoss, *sum.FinalValAccuracy)
	}
	// fp32 DiLoCo sends one 4-byte value per parameter per round.
	if want := int64(6 * 4 * sum.Parameters); sum.BytesPerWorker != want {
		t.Fatalf("bytes per worker %d, want %d", sum.BytesPerWorker, want)
	}
	if sum.SamplesPerWorker != 6*10*32 {
		t.Fatalf("samples per worker %d, want %d", sum.SamplesPerWorker, 6*10*32)
	}
}

func TestDDPBaselineLearnsAndSendsEveryStep(t *testing.T) {
	task, _, err := BuildTask(smallMLPSpec(2, "iid"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), task, RunConfig{Mode: ModeDDP, InnerSteps: 10, Rounds: 4, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if *sum.FinalValAccuracy < 0.6 {
		t.Fatalf("DDP accuracy %.3f", *sum.FinalValAccuracy)
	}
	if want := int64(4 * 10 * 4 * sum.Parameters); sum.BytesPerWorker != want {
		t.Fatalf("DDP bytes per worker %d, want %d (4 bytes × params × steps)", sum.BytesPerWorker, want)
	}
}

func TestRunIsDeterministic(t *testing.T) {
	run := func() *Summary {
		task, _, err := BuildTask(smallMLPSpec(3, "dirichlet:0.3"))
		if err != nil {
			t.Fatal(err)
		}
		sum, err := Run(context.Background(), task, RunConfig{InnerSteps: 5, Rounds: 2, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	a, b := run(), run()
	if a.ModelHash != b.ModelHash || a.FinalValLoss != b.FinalValLoss {
		t.Fatalf("same seed, different results: %s/%v vs %s/%v", a.ModelHash, a.FinalValLoss, b.ModelHash, b.FinalValLoss)
	}
}

func TestReplicasApplyingSameOuterStepStayBitIdentical(t *testing.T) {
	task, _, err := BuildTask(smallMLPSpec(2, "iid"))
	if err != nil {
		t.Fatal(err)
	}
	var ws []*Worker
	for i := 0; i < 2; i++ {
		m, err := task.NewModel(3)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWorker(m, task.Sources[i], WorkerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	if ParamsHash(ws[0].Global()) != ParamsHash(ws[1].Global()) {
		t.Fatal("same seed gave different θ_0")
	}
	for round := 0; round < 3; round++ {
		var ds [][]float32
		for _, w := range ws {
			if _, err := w.InnerSteps(4); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, w.PseudoGradient(nil))
		}
		if ParamsHash(ws[0].Model().Params()) == ParamsHash(ws[1].Model().Params()) {
			t.Fatal("workers on different data produced identical local models")
		}
		agg, err := Average(nil, ds, []float64{1, 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			if err := w.OuterStep(agg); err != nil {
				t.Fatal(err)
			}
		}
		if ParamsHash(ws[0].Global()) != ParamsHash(ws[1].Global()) {
			t.Fatalf("round %d: replicas differ after the same outer step", round)
		}
		if ParamsHash(ws[0].Model().Params()) != ParamsHash(ws[0].Global()) {
			t.Fatalf("round %d: local model not restarted from θ_{t+1}", round)
		}
	}
	if err := ws[0].OuterStep(make([]float32, 3)); err == nil {
		t.Fatal("OuterStep accepted an aggregate of the wrong size")
	}
}

func TestCharLMLossFallsOnPlay(t *testing.T) {
	if testing.Short() {
		t.Skip("char LM training takes ~10 s")
	}
	task, info, err := BuildTask(TaskSpec{Model: "charlm", Workers: 2, Partition: "natural", Seed: 1, Batch: 8, ValSamples: 40})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.ShardGroups) != 2 || len(info.ShardGroups[0]) == 0 {
		t.Fatalf("natural partition groups = %v", info.ShardGroups)
	}
	sum, err := Run(context.Background(), task, RunConfig{InnerSteps: 15, Rounds: 3, Seed: 1, Inner: AdamWConfig{LR: 3e-3}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := task.NewModel(1)
	init, _, n, err := m.Eval(task.Val)
	if err != nil {
		t.Fatal(err)
	}
	if got, start := sum.FinalValLoss, init/float64(n); got > start-0.5 {
		t.Fatalf("char LM val loss %.3f → %.3f: not learning", start, got)
	}
}

func TestBuildTaskRejectsBadSpecs(t *testing.T) {
	for _, tc := range []struct {
		spec TaskSpec
		want string
	}{
		{TaskSpec{Model: "resnet", Workers: 2}, "unknown model"},
		{TaskSpec{Model: "mlp", Workers: 0}, "workers"},
		{TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 2, Partition: "dirichlet:-1"}, "dirichlet"},
		{TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 2, Partition: "zipf"}, "unknown kind"},
		{TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 2, Partition: "natural"}, "natural"},
		{TaskSpec{Model: "mlp:784-10-3", DataDir: EmbeddedData, Workers: 2}, "does not fit"},
		{TaskSpec{Model: "charlm", Workers: 2, Partition: "dirichlet:0.5"}, "needs labels"},
		{TaskSpec{Model: "mlp", Workers: 2, DataDir: "/nonexistent/dir"}, "nonexistent"},
		{TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 2, LabelNoise: []float64{0.1}}, "1 values for 2 shards"},
		{TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 2, LabelNoise: []float64{0.1, 1.5}}, "shard 2"},
		{TaskSpec{Model: "charlm", Workers: 2, LabelNoise: []float64{0, 0.1}}, "no labels"},
	} {
		_, _, err := BuildTask(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("BuildTask(%+v) error = %v, want mention of %q", tc.spec, err, tc.want)
		}
	}
}

func TestRunConfigValidation(t *testing.T) {
	for _, c := range []RunConfig{{Mode: "async"}, {InnerSteps: -1}, {Rounds: -2}, {Inner: AdamWConfig{LR: float32(math.NaN())}}} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", c)
		}
	}
}

func TestCodecCutsBytesAndKeepsLearning(t *testing.T) {
	run := func(codec string) *Summary {
		task, _, err := BuildTask(smallMLPSpec(3, "iid"))
		if err != nil {
			t.Fatal(err)
		}
		sum, err := Run(context.Background(), task, RunConfig{InnerSteps: 8, Rounds: 4, Seed: 7, Codec: codec})
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	raw, q8 := run(""), run("q8")
	if q8.Codec != "q8" || raw.Codec != "fp32" {
		t.Fatalf("codec names %q, %q", raw.Codec, q8.Codec)
	}
	// q8 carries 8 bits per value plus a scale per block and a header: between 3.5× and 4× fewer bytes.
	if r := float64(raw.BytesPerWorker) / float64(q8.BytesPerWorker); r < 3.5 || r > 4 {
		t.Fatalf("fp32/q8 bytes ratio %.2f, want in [3.5, 4]", r)
	}
	if d := *raw.FinalValAccuracy - *q8.FinalValAccuracy; d > 0.03 || d < -0.03 {
		t.Fatalf("q8 accuracy %.3f vs fp32 %.3f", *q8.FinalValAccuracy, *raw.FinalValAccuracy)
	}
	// The fp32 codec decodes to exactly the raw pseudo-gradient: same model, header bytes on top.
	fp := run("fp32")
	if fp.ModelHash != raw.ModelHash {
		t.Fatal("fp32 codec changed the model")
	}
	if fp.BytesPerWorker <= raw.BytesPerWorker || fp.BytesPerWorker > raw.BytesPerWorker+4*200 {
		t.Fatalf("fp32 codec bytes %d vs raw %d: want raw plus a small header per round", fp.BytesPerWorker, raw.BytesPerWorker)
	}
}

func TestCodecRejectedWhereItCannotApply(t *testing.T) {
	task, _, err := BuildTask(smallMLPSpec(2, "iid"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), task, RunConfig{Mode: ModeDDP, Codec: "q8", Rounds: 1}); err == nil || !strings.Contains(err.Error(), "diloco only") {
		t.Fatalf("ddp with codec: %v", err)
	}
	if _, err := Run(context.Background(), task, RunConfig{Codec: "q5", Rounds: 1}); err == nil || !strings.Contains(err.Error(), "q5") {
		t.Fatalf("unknown codec: %v", err)
	}
	if _, err := Run(context.Background(), task, RunConfig{Mode: ModeDDP, DownCodec: "q8", Rounds: 1}); err == nil || !strings.Contains(err.Error(), "diloco only") {
		t.Fatalf("ddp with a down codec: %v", err)
	}
	if _, err := Run(context.Background(), task, RunConfig{DownCodec: "topk:2", Rounds: 1}); err == nil || !strings.Contains(err.Error(), "down codec") {
		t.Fatalf("bad down codec: %v", err)
	}
}

// TestDownCodecCodesTheAggregate: a lossless down codec applies the average itself (the same
// model as none), a sparse one sends a small fraction of the values a round and still learns.
func TestDownCodecCodesTheAggregate(t *testing.T) {
	run := func(down string) *Summary {
		task, _, err := BuildTask(smallMLPSpec(3, "iid"))
		if err != nil {
			t.Fatal(err)
		}
		sum, err := Run(context.Background(), task, RunConfig{InnerSteps: 8, Rounds: 4, Seed: 7, Codec: "topk:0.05/m+q1", ErrorDecay: 0.9, DownCodec: down})
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	none, fp, sparse := run(""), run("fp32"), run("topk:0.05/m+q8")
	if fp.ModelHash != none.ModelHash || fp.DownCodec != "fp32" || none.DownCodec != "" || none.DownBytes != 0 {
		t.Fatalf("fp32 down codec: model %s against %s, codec %q, none's bytes %d", fp.ModelHash, none.ModelHash, fp.DownCodec, none.DownBytes)
	}
	// fp32 is 4 bytes a parameter and a header a round; top-5 % of q8 values with their indices
	// and the dense small tensors is under 1.2 bits a parameter.
	if want := int64(4 * 4 * fp.Parameters); fp.DownBytes < want || fp.DownBytes > want+4*200 {
		t.Fatalf("fp32 aggregates %d bytes, want %d and headers", fp.DownBytes, want)
	}
	if bits := float64(8*sparse.DownBytes) / float64(4*sparse.Parameters); bits > 1.2 {
		t.Fatalf("sparse aggregates at %.2f bits a parameter", bits)
	}
	first, last := sparse.History[0], sparse.History[len(sparse.History)-1]
	if last.ValLoss >= first.ValLoss || *sparse.FinalValAccuracy < 0.5 {
		t.Fatalf("a sparse downlink did not learn: val loss %.3f → %.3f, accuracy %.3f", first.ValLoss, last.ValLoss, *sparse.FinalValAccuracy)
	}
}

func TestLabelNoise(t *testing.T) {
	clean, _, err := BuildTask(TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 3, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	noisy, _, err := BuildTask(TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 3, Seed: 4, LabelNoise: []float64{0, 0.5, 1}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{0, 0.5, 1} {
		var a, b nn.Batch
		clean.Sources[i].Next(&a, 400)
		noisy.Sources[i].Next(&b, 400)
		wrong := 0
		for k := range a.Y {
			if a.Y[k] != b.Y[k] {
				wrong++
			}
		}
		if got := float64(wrong) / 400; math.Abs(got-want) > 0.1 {
			t.Errorf("shard %d: %.2f of labels wrong, want about %.2f", i, got, want)
		}
		if !slices.Equal(a.X, b.X) {
			t.Errorf("shard %d: label noise changed the pixels", i)
		}
	}
}

// Another BatchSeed draws the same shards, with the same label noise, in another order; BatchSeed
// equal to Seed is the default order.
func TestBatchSeed(t *testing.T) {
	spec := TaskSpec{Model: "mlp", DataDir: EmbeddedData, Workers: 2, Partition: "dirichlet:0.5", Seed: 4, LabelNoise: []float64{0.2, 0}}
	first := func(s TaskSpec) ([]nn.Batch, TaskInfo) {
		task, info, err := BuildTask(s)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]nn.Batch, len(task.Sources))
		for i, src := range task.Sources {
			src.Next(&out[i], src.Len()) // one pass: every sample of the shard once
		}
		return out, info
	}
	base, info := first(spec)
	spec.BatchSeed = 4
	same, _ := first(spec)
	spec.BatchSeed = 99
	other, otherInfo := first(spec)
	for i := range base {
		if !slices.Equal(base[i].Y, same[i].Y) || !slices.Equal(base[i].X, same[i].X) {
			t.Errorf("shard %d: BatchSeed = Seed drew another order", i)
		}
		if slices.Equal(base[i].Y, other[i].Y) {
			t.Errorf("shard %d: BatchSeed 99 drew the default order", i)
		}
		if !slices.Equal(info.Fingerprints[i], otherInfo.Fingerprints[i]) || info.ShardSizes[i] != otherInfo.ShardSizes[i] {
			t.Errorf("shard %d: BatchSeed changed the shard", i)
		}
		// The same samples, and the same (noisy) labels: only the order differs.
		count := func(b nn.Batch) map[int]int {
			m := map[int]int{}
			for _, y := range b.Y {
				m[y]++
			}
			return m
		}
		a, b := count(base[i]), count(other[i])
		for y, n := range a {
			if b[y] != n {
				t.Errorf("shard %d: label %d %d times, %d with BatchSeed 99", i, y, n, b[y])
			}
		}
	}
}
