package generate

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cohortlab/cohort/trainer/export"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/safetensors"
)

const spec = "gpt:2-16-2-8"

func trained(t *testing.T) *nn.GPT {
	t.Helper()
	cfg, err := nn.ParseGPTName(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Batch, cfg.Seed = 2, 3
	g, err := nn.NewGPT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Move θ off its initialisation so the check is not about near-uniform logits.
	r := rand.New(rand.NewPCG(7, 7))
	for i := range g.Params() {
		g.Params()[i] += float32(r.NormFloat64() * 0.05)
	}
	return g
}

// TestLogitsMatchTheTrainingGraph: the inference pass scores every next byte of a sequence as the
// gorgonia graph the cohort trained does (summed cross-entropy within float32 tolerance).
func TestLogitsMatchTheTrainingGraph(t *testing.T) {
	g := trained(t)
	m, err := New(spec, g.Layout(), g.Params())
	if err != nil {
		t.Fatal(err)
	}
	T := m.Context()
	r := rand.New(rand.NewPCG(1, 2))
	tokens, targets := make([]int, T), make([]int, T)
	for i := range tokens {
		tokens[i], targets[i] = r.IntN(256), r.IntN(256)
	}
	want, _, count, err := g.Eval(nn.Batch{Tokens: tokens, Y: targets})
	if err != nil || count != T {
		t.Fatalf("graph eval: %v, %d predictions", err, count)
	}
	var got float64
	for p := 0; p < T; p++ {
		logits, err := m.Logits(tokens[:p+1])
		if err != nil {
			t.Fatal(err)
		}
		mx := math.Inf(-1)
		for _, v := range logits {
			mx = max(mx, float64(v))
		}
		var z float64
		for _, v := range logits {
			z += math.Exp(float64(v) - mx)
		}
		got += -(float64(logits[targets[p]]) - mx - math.Log(z))
	}
	if math.Abs(got-want) > 1e-3*math.Abs(want) {
		t.Fatalf("summed loss %.6f by inference, %.6f by the training graph", got, want)
	}
}

// TestGenerateFromAnExportedFile: export → import → generate is deterministic in the seed, greedy
// at temperature 0, and refuses what is not a model of its spec.
func TestGenerateFromAnExportedFile(t *testing.T) {
	g := trained(t)
	file, err := export.Export(export.Provenance{Spec: spec, Cohort: 1, Round: 3, ModelHash: make([]byte, 32)}, g.Layout(), g.Params())
	if err != nil {
		t.Fatal(err)
	}
	p, layout, theta, err := export.Import(file, safetensors.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(p.Spec, layout, theta)
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Generate([]byte("ROMEO:"), Options{Tokens: 40, Temperature: 0.8, Seed: 1})
	if err != nil || len(a) != 40 {
		t.Fatalf("generate: %q, %v", a, err)
	}
	b, _ := m.Generate([]byte("ROMEO:"), Options{Tokens: 40, Temperature: 0.8, Seed: 1})
	c, _ := m.Generate([]byte("ROMEO:"), Options{Tokens: 40, Temperature: 0.8, Seed: 2})
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Errorf("same seed %q / %q, other seed %q: want equal, then different", a, b, c)
	}
	// Temperature 0 is the arg-max, whatever the seed.
	g1, _ := m.Generate([]byte("ab"), Options{Tokens: 10, Seed: 1})
	g2, _ := m.Generate([]byte("ab"), Options{Tokens: 10, Seed: 9})
	if !bytes.Equal(g1, g2) {
		t.Errorf("greedy decoding depends on the seed: %q vs %q", g1, g2)
	}
	for _, o := range []Options{{Tokens: 0}, {Tokens: MaxTokens + 1}, {Tokens: 1, Temperature: -1}, {Tokens: 1, Temperature: math.NaN()}} {
		if _, err := m.Generate(nil, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := New("gpt:2-16-2-16", layout, theta); !errors.Is(err, ErrModel) {
		t.Errorf("parameters of another spec: %v", err)
	}
	if _, err := New(spec, layout, theta[:len(theta)-1]); !errors.Is(err, ErrModel) {
		t.Errorf("a parameter short: %v", err)
	}
}
