package nn

import (
	"errors"
	"math"
	"testing"
)

// FuzzParseGPTName: any string either parses to a config that validates and names itself back, or
// is refused with ErrConfig; nothing panics.
func FuzzParseGPTName(f *testing.F) {
	for _, s := range []string{"gpt:4-128-4-64", "gpt:2-32-2-16", "gpt:1-8-8-2-v11", "gpt:1-8-8-2-v256", "gpt:1-8-8-2-v011", "gpt:12-768-12-1024", "gpt:4-128-3-64", "gpt:-1-2-3-4", "gpt:99999999999999999999-1-1-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, err := ParseGPTName(name)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("ParseGPTName(%q): error %v does not wrap ErrConfig", name, err)
			}
			return
		}
		arch := c
		arch.Batch = 1
		if err := arch.Validate(); err != nil {
			t.Fatalf("ParseGPTName(%q) = %+v, which does not validate: %v", name, c, err)
		}
		back, err := ParseGPTName(c.name())
		if err != nil || back.withDefaults() != c.withDefaults() {
			t.Fatalf("%q → %+v → %q → %+v, %v", name, c, c.name(), back, err)
		}
	})
}

// FuzzGPTBatch: whatever a caller passes, Grad and Eval return a result or an ErrBatch error, never
// panic, and never change the parameters.
func FuzzGPTBatch(f *testing.F) {
	m, err := NewGPT(GPTConfig{Layers: 1, Embed: 4, Heads: 2, Context: 3, Vocab: 6, Batch: 2, EvalBatch: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{0, 1, 2, 3, 4, 5}, []byte{1, 2, 3, 4, 5, 0}, false)
	f.Add([]byte{0, 1, 2}, []byte{1, 2, 3}, true)
	f.Add([]byte{0, 1, 6, 3, 4, 5}, []byte{1, 2, 3, 4, 5, 0}, false)
	f.Add([]byte{0, 1, 2, 3, 4, 5, 0, 1, 2}, []byte{1, 2, 3, 4, 5, 0, 1, 2, 255}, true)
	params := append([]float32(nil), m.Params()...)
	grad := make([]float32, len(params))
	f.Fuzz(func(t *testing.T, tok, y []byte, withX bool) {
		b := Batch{Tokens: intsFromBytes(tok, 6), Y: intsFromBytes(y, 6)}
		if withX {
			b.X = []float32{1}
		}
		loss, err := m.Grad(b, grad)
		if err != nil && !errors.Is(err, ErrBatch) {
			t.Fatalf("Grad: unexpected error %v", err)
		}
		if err == nil && (math.IsNaN(float64(loss)) || loss < 0) {
			t.Fatalf("Grad loss %v", loss)
		}
		lossSum, correct, count, err := m.Eval(b)
		if err != nil && !errors.Is(err, ErrBatch) {
			t.Fatalf("Eval: unexpected error %v", err)
		}
		if err == nil && (count != len(b.Y) || correct > count || lossSum < 0) {
			t.Fatalf("Eval = %v, %d, %d for %d targets", lossSum, correct, count, len(b.Y))
		}
		if !bitsEqual(params, m.Params()) {
			t.Fatal("parameters changed")
		}
	})
}
