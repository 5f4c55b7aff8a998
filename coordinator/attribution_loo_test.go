package coordinator

import (
	"math/rand/v2"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/coordinator/audit"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// noisyLabels relabels a fraction of each batch uniformly at random (seeded): a contributor with
// worse data.
type noisyLabels struct {
	trainer.Source
	p   float64
	rng *rand.Rand
}

func (s *noisyLabels) Next(b *nn.Batch, n int) {
	s.Source.Next(b, n)
	for i := range b.Y {
		if s.rng.Float64() < s.p {
			b.Y[i] = s.rng.IntN(10)
		}
	}
}

const looModel = "mlp:784-32-10"

// cohortRun trains the included peers with DiLoCo as a cohort does (same scoring code as the
// leader: validation gradients at θ_t, ComputePartial, Combine, Score with the history, the ledger's
// Allocate) and returns the final validation loss and what each peer was paid.
func cohortRun(t *testing.T, include []bool, noise []float64) (float64, map[string]uint64) {
	t.Helper()
	const rounds, H, seed = 6, 20, 11
	train, _, _, err := trainer.LoadFashionMNIST(trainer.EmbeddedData)
	if err != nil {
		t.Fatal(err)
	}
	val, err := trainer.ValidationFor(looModel, trainer.EmbeddedData, 800)
	if err != nil {
		t.Fatal(err)
	}
	vmodel, err := trainer.NewModel(looModel, 50, seed)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var workers []*trainer.Worker
	for i := range include {
		if !include[i] {
			continue
		}
		idx := make([]int, 0, 600)
		for j := i * 600; j < (i+1)*600; j++ { // IID shards of 600
			idx = append(idx, j)
		}
		src, err := trainer.NewImageSource(train, idx, uint64(100+i))
		if err != nil {
			t.Fatal(err)
		}
		m, err := trainer.NewModel(looModel, 32, seed)
		if err != nil {
			t.Fatal(err)
		}
		w, err := trainer.NewWorker(m, &noisyLabels{Source: src, p: noise[i], rng: rand.New(rand.NewPCG(uint64(i), 7))}, trainer.WorkerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, string(rune('a'+i)))
		workers = append(workers, w)
	}
	var parts []attribution.Participant
	for i, n := range names {
		parts = append(parts, attribution.Participant{Member: n, Order: uint32(i + 1), Samples: 600,
			Contributors: []consensus.ContributorData{{Name: n, Samples: 600}}})
	}
	paid := map[string]uint64{}
	hist := map[string][]float64{}
	var u []float32
	for r := 0; r < rounds; r++ {
		theta := workers[0].Global()
		copy(vmodel.Params(), theta)
		draws, err := val.Draw(uint64(r), 8, 50)
		if err != nil {
			t.Fatal(err)
		}
		var grads [][]float32
		var b nn.Batch
		for _, d := range draws {
			val.Subset(&b, d)
			g := make([]float32, len(theta))
			if _, err := vmodel.Grad(b, g); err != nil {
				t.Fatal(err)
			}
			grads = append(grads, g)
		}
		var deltas [][]float32
		var ws []float64
		for _, w := range workers {
			if _, err := w.InnerSteps(H); err != nil {
				t.Fatal(err)
			}
			deltas, ws = append(deltas, w.PseudoGradient(nil)), append(ws, 600)
		}
		if u == nil {
			u = make([]float32, len(theta))
		}
		p, err := attribution.ComputePartial(0, uint64(len(theta)), grads, u, names, deltas, attribution.Sketch{})
		if err != nil {
			t.Fatal(err)
		}
		sums, err := attribution.Combine(uint64(len(theta)), []attribution.Partial{p})
		if err != nil {
			t.Fatal(err)
		}
		for i := range parts {
			parts[i].History = hist[parts[i].Member]
		}
		res, err := attribution.Score(sums, parts, attribution.Config{})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range res.Influence {
			hist[x.Contributor] = append(hist[x.Contributor], float64(x.Value)/consensus.InfluenceUnit)
		}
		data, compute := map[string]uint64{}, map[string]uint64{}
		for _, w := range res.Data {
			data[w.Contributor] = w.Weight
		}
		for _, w := range res.Compute {
			compute[w.Contributor] = w.Weight
		}
		d, _ := consensus.Allocate(80_000, data)
		c, _ := consensus.Allocate(20_000, compute)
		for k, v := range d {
			paid[k] += v
		}
		for k, v := range c {
			paid[k] += v
		}
		agg, err := trainer.Average(nil, deltas, ws)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range workers {
			if err := w.OuterStep(agg); err != nil {
				t.Fatal(err)
			}
		}
		u = agg
	}
	copy(vmodel.Params(), workers[0].Global())
	loss, _, count, err := vmodel.Eval(val.All())
	if err != nil {
		t.Fatal(err)
	}
	return loss / float64(count), paid
}

// TestSharesRankLikeLeaveOneOut: on a small case (six IID peers whose labels are 0–75 % noise),
// the shares the scoring pays rank the peers like leave-one-out retraining does (how much the
// final validation loss rises without each peer): Spearman ≥ 0.8.
func TestSharesRankLikeLeaveOneOut(t *testing.T) {
	noise := []float64{0, 0.15, 0.3, 0.45, 0.6, 0.75}
	all := []bool{true, true, true, true, true, true}
	lossAll, paid := cohortRun(t, all, noise)
	var shares, loo []float64
	for i := range noise {
		without := append([]bool(nil), all...)
		without[i] = false
		l, _ := cohortRun(t, without, noise)
		name := string(rune('a' + i))
		shares = append(shares, float64(paid[name]))
		loo = append(loo, l-lossAll)
		t.Logf("peer %s (label noise %2.0f%%): paid %6d, loss without it %+.4f", name, 100*noise[i], paid[name], l-lossAll)
	}
	if rho := audit.Spearman(shares, loo); !(rho >= 0.8) {
		t.Fatalf("Spearman between shares and leave-one-out values %.2f < 0.8", rho)
	} else {
		t.Logf("Spearman %.2f", rho)
	}
}
