package nn

import (
	"errors"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestEmbedMatchesByIndices: the lookup and its gradient give the bits of gorgonia's ByIndices
// along axis 0 and of its gradient, with repeated indices (rows summed) and unused rows (zero),
// into a new tensor and into a reused destination holding stale values.
func TestEmbedMatchesByIndices(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ V, D, N int }{{5, 3, 7}, {11, 8, 16}, {1, 4, 3}, {64, 33, 100}} {
		table := tensor.New(tensor.WithShape(tc.V, tc.D), tensor.WithBacking(randFloats(r, tc.V*tc.D)))
		dout := tensor.New(tensor.WithShape(tc.N, tc.D), tensor.WithBacking(randFloats(r, tc.N*tc.D)))
		ix := make([]int, tc.N)
		for i := range ix {
			ix[i] = r.IntN(tc.V)
		}
		idx := tensor.New(tensor.WithShape(tc.N), tensor.WithBacking(ix))

		want, err := tensor.ByIndices(table, idx, 0)
		if err != nil {
			t.Fatal(err)
		}
		wantGrad, err := tensor.ByIndicesB(table, dout, idx, 0)
		if err != nil {
			t.Fatal(err)
		}
		stale := tensor.New(tensor.WithShape(tc.N, tc.D), tensor.WithBacking(randFloats(r, tc.N*tc.D)))
		staleGrad := tensor.New(tensor.WithShape(tc.V, tc.D), tensor.WithBacking(randFloats(r, tc.V*tc.D)))
		for _, dst := range []struct{ fwd, grad G.Value }{{nil, nil}, {stale, staleGrad}} {
			got, err := embedOp{}.UsePreallocDo(dst.fwd, table, idx)
			if err != nil {
				t.Fatal(err)
			}
			if !bitsEqual(got.(*tensor.Dense).Float32s(), want.(*tensor.Dense).Float32s()) {
				t.Fatalf("%+v: lookup differs from ByIndices", tc)
			}
			gotGrad, err := embedGradOp{V: tc.V}.UsePreallocDo(dst.grad, dout, idx)
			if err != nil {
				t.Fatal(err)
			}
			if !bitsEqual(gotGrad.(*tensor.Dense).Float32s(), wantGrad.(*tensor.Dense).Float32s()) {
				t.Fatalf("%+v: gradient differs from ByIndices'", tc)
			}
		}
	}
}

// TestEmbedRejectsBadInputs: indices out of the table and inputs of the wrong kind are errors.
func TestEmbedRejectsBadInputs(t *testing.T) {
	table := tensor.New(tensor.WithShape(4, 2), tensor.Of(tensor.Float32))
	dout := tensor.New(tensor.WithShape(2, 2), tensor.Of(tensor.Float32))
	ints := func(v ...int) G.Value { return tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(v)) }
	for _, tc := range []struct {
		name string
		op   G.Op
		in   []G.Value
	}{
		{"index too large", embedOp{}, []G.Value{table, ints(0, 4)}},
		{"negative index", embedOp{}, []G.Value{table, ints(-1, 0)}},
		{"float indices", embedOp{}, []G.Value{table, dout}},
		{"one input", embedOp{}, []G.Value{table}},
		{"gradient index too large", embedGradOp{V: 4}, []G.Value{dout, ints(1, 9)}},
		{"gradient rows and indices", embedGradOp{V: 4}, []G.Value{dout, ints(1, 2, 3)}},
	} {
		if _, err := tc.op.Do(tc.in...); !errors.Is(err, ErrGraph) {
			t.Errorf("%s: got %v, want ErrGraph", tc.name, err)
		}
	}
}

func randFloats(r *rand.Rand, n int) []float32 {
	f := make([]float32, n)
	for i := range f {
		f[i] = float32(r.NormFloat64())
	}
	return f
}
