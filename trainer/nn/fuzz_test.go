package nn

import (
	"errors"
	"math"
	"testing"
)

// Fuzz targets for the batch boundary: whatever a caller passes, Grad and Eval return either a
// result or an ErrBatch/ErrGrad error, never panic, and never change the parameters.

// intsFromBytes maps each byte to a small signed int around the valid range.
func intsFromBytes(data []byte, vocab int) []int {
	out := make([]int, len(data))
	for i, b := range data {
		out[i] = int(int8(b)) % (vocab + 3)
	}
	return out
}

func FuzzCharLMBatch(f *testing.F) {
	m, err := NewCharLM(CharLMConfig{Vocab: 6, Context: 3, Embed: 4, Batch: 2, EvalBatch: 2})
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

func FuzzMLPBatch(f *testing.F) {
	m, err := NewMLP(MLPConfig{Sizes: []int{2, 3, 3}, Batch: 2, EvalBatch: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{1, 2, 3, 4}, []byte{0, 2}, false)
	f.Add([]byte{1, 2, 3, 4, 5, 6}, []byte{0, 2, 1}, false)
	f.Add([]byte{1, 2, 3, 4}, []byte{0, 3}, true)
	params := append([]float32(nil), m.Params()...)
	grad := make([]float32, len(params))
	f.Fuzz(func(t *testing.T, x, y []byte, withTokens bool) {
		b := Batch{X: make([]float32, len(x)), Y: intsFromBytes(y, 3)}
		for i, v := range x {
			b.X[i] = float32(int8(v)) / 16
		}
		if withTokens {
			b.Tokens = []int{0}
		}
		if _, err := m.Grad(b, grad); err != nil && !errors.Is(err, ErrBatch) {
			t.Fatalf("Grad: unexpected error %v", err)
		}
		_, correct, count, err := m.Eval(b)
		if err != nil && !errors.Is(err, ErrBatch) {
			t.Fatalf("Eval: unexpected error %v", err)
		}
		if err == nil && (count != len(b.Y) || correct > count) {
			t.Fatalf("Eval counted %d of %d for %d labels", correct, count, len(b.Y))
		}
		if !bitsEqual(params, m.Params()) {
			t.Fatal("parameters changed")
		}
	})
}
