package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestKernelGradients checks every differentiable kernel's gradient against central finite
// differences of its own forward pass, on small random inputs: loss = Σ w ⊙ kernel(inputs) for a
// random constant w.
func TestKernelGradients(t *testing.T) {
	h := headLayout{n: 2, T: 3, NH: 2, hd: 2}
	cases := []struct {
		name   string
		shapes [][]int
		build  func(in []*G.Node) (*G.Node, error)
	}{
		{"gelu", [][]int{{3, 5}}, func(in []*G.Node) (*G.Node, error) { return gelu(in[0]) }},
		{"addrow", [][]int{{4, 6}, {6}}, func(in []*G.Node) (*G.Node, error) { return addRow(in[0], in[1]) }},
		{"layernorm", [][]int{{4, 6}, {6}, {6}}, func(in []*G.Node) (*G.Node, error) { return layerNorm(in[0], in[1], in[2]) }},
		{"logsoftmax", [][]int{{4, 7}}, func(in []*G.Node) (*G.Node, error) { return logSoftmax(in[0]) }},
		{"causalsoftmax", [][]int{{2, 4, 4}}, func(in []*G.Node) (*G.Node, error) { return causalSoftmax(in[0], 0.7) }},
		{"splitheads", [][]int{{6, 12}}, func(in []*G.Node) (*G.Node, error) {
			l := h
			l.W, l.from = 12, 4
			return splitHeads(in[0], l)
		}},
		{"mergeheads", [][]int{{4, 3, 2}}, func(in []*G.Node) (*G.Node, error) {
			l := h
			l.W, l.from = 4, 0
			return mergeHeads(in[0], l)
		}},
		{"attention", [][]int{{6, 12}}, func(in []*G.Node) (*G.Node, error) {
			l := h
			l.W = 12
			return attention(in[0], l, 0.6)
		}},
		{"mmBT", [][]int{{3, 4}, {5, 4}}, func(in []*G.Node) (*G.Node, error) { return bmm(in[0], in[1], false, true) }},
		{"mm", [][]int{{3, 4}, {4, 5}}, func(in []*G.Node) (*G.Node, error) { return bmm(in[0], in[1], false, false) }},
		{"bmm", [][]int{{2, 3, 4}, {2, 4, 5}}, func(in []*G.Node) (*G.Node, error) { return bmm(in[0], in[1], false, false) }},
		{"bmmBT", [][]int{{2, 3, 4}, {2, 5, 4}}, func(in []*G.Node) (*G.Node, error) { return bmm(in[0], in[1], false, true) }},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(ci), 9))
			g := G.NewGraph()
			data := make([][]float32, len(tc.shapes))
			nodes := make([]*G.Node, len(tc.shapes))
			for i, s := range tc.shapes {
				n := tensor.Shape(s).TotalSize()
				data[i] = make([]float32, n)
				for j := range data[i] {
					data[i][j] = float32(r.NormFloat64())
				}
				nodes[i] = G.NewTensor(g, tensor.Float32, len(s), G.WithShape(s...), G.WithName(fmt.Sprintf("in%d", i)),
					G.WithValue(tensor.New(tensor.WithShape(s...), tensor.WithBacking(data[i]))))
			}
			out, err := tc.build(nodes)
			if err != nil {
				t.Fatal(err)
			}
			w := make([]float32, out.Shape().TotalSize())
			for j := range w {
				w[j] = float32(r.NormFloat64())
			}
			wn := G.NewConstant(tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(w)))
			loss := G.Must(G.Sum(G.Must(G.HadamardProd(out, wn))))
			grads, err := G.Grad(loss, nodes...)
			if err != nil {
				t.Fatal(err)
			}
			var lv G.Value
			G.Read(loss, &lv)
			vm := G.NewTapeMachine(g)
			defer func() { _ = vm.Close() }()
			run := func() float64 {
				t.Helper()
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				vm.Reset()
				f, err := scalarF32(lv)
				if err != nil {
					t.Fatal(err)
				}
				return float64(f)
			}
			run()
			analytic := make([][]float32, len(nodes))
			for i, gn := range grads {
				analytic[i] = append([]float32(nil), gn.Value().Data().([]float32)...)
			}
			const eps = 1e-2
			for i := range data {
				for j := range data[i] {
					orig := data[i][j]
					data[i][j] = orig + eps
					lp := run()
					data[i][j] = orig - eps
					lm := run()
					data[i][j] = orig
					fd, an := (lp-lm)/(2*eps), float64(analytic[i][j])
					if math.Abs(fd-an) > 2e-3+1e-2*math.Abs(fd) {
						t.Fatalf("input %d[%d]: gradient %v, finite difference %v", i, j, an, fd)
					}
				}
			}
		})
	}
}

// TestLNStats4MatchesLNStats: the four-row statistics are each row's own, bit for bit.
func TestLNStats4MatchesLNStats(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 3, 128, 129} {
		x := make([]float32, 4*n)
		for i := range x {
			x[i] = float32(r.NormFloat64()*3 + 1)
		}
		mean, inv := lnStats4(x, n)
		for i := range 4 {
			m, v := lnStats(x[i*n : (i+1)*n])
			if math.Float32bits(m) != math.Float32bits(mean[i]) || math.Float32bits(v) != math.Float32bits(inv[i]) {
				t.Fatalf("n=%d row %d: (%v, %v), one row at a time (%v, %v)", n, i, mean[i], inv[i], m, v)
			}
		}
	}
}

// TestAttentionMatchesComposition: the fused attention op and its gradient give the bits of the
// composition it replaces (splitHeads three times, bmm, causalSoftmax, bmm, mergeHeads, and
// gorgonia's gradient of that), for one and several heads and tasks.
func TestAttentionMatchesComposition(t *testing.T) {
	for _, tc := range []struct {
		name         string
		n, T, NH, hd int
	}{{"one head", 1, 5, 1, 3}, {"small", 2, 4, 2, 2}, {"gpt-like", 3, 64, 4, 32}} {
		t.Run(tc.name, func(t *testing.T) {
			D := tc.NH * tc.hd
			N := tc.n * tc.T
			r := rand.New(rand.NewPCG(7, uint64(N)))
			x := make([]float32, N*3*D)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			w := make([]float32, N*D)
			for i := range w {
				w[i] = float32(r.NormFloat64())
			}
			scale := float32(1 / math.Sqrt(float64(tc.hd)))
			run := func(fused bool) (y, dx []float32) {
				g := G.NewGraph()
				qkv := G.NewTensor(g, tensor.Float32, 2, G.WithShape(N, 3*D), G.WithName("qkv"),
					G.WithValue(tensor.New(tensor.WithShape(N, 3*D), tensor.WithBacking(append([]float32(nil), x...)))))
				l := headLayout{n: tc.n, T: tc.T, NH: tc.NH, hd: tc.hd, W: 3 * D}
				var out *G.Node
				if fused {
					out = G.Must(attention(qkv, l, scale))
				} else {
					heads := func(from int) *G.Node {
						l := l
						l.from = from
						return G.Must(splitHeads(qkv, l))
					}
					q, k, v := heads(0), heads(D), heads(2*D)
					att := G.Must(causalSoftmax(G.Must(bmm(q, k, false, true)), scale))
					out = G.Must(mergeHeads(G.Must(bmm(att, v, false, false)), headLayout{n: tc.n, T: tc.T, NH: tc.NH, hd: tc.hd, W: D}))
				}
				wn := G.NewConstant(tensor.New(tensor.WithShape(N, D), tensor.WithBacking(w)))
				loss := G.Must(G.Sum(G.Must(G.HadamardProd(out, wn))))
				grads, err := G.Grad(loss, qkv)
				if err != nil {
					t.Fatal(err)
				}
				vm := G.NewTapeMachine(g)
				defer func() { _ = vm.Close() }()
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				return append([]float32(nil), out.Value().Data().([]float32)...), append([]float32(nil), grads[0].Value().Data().([]float32)...)
			}
			y, dx := run(true)
			yc, dxc := run(false)
			for i := range yc {
				if y[i] != yc[i] {
					t.Fatalf("y[%d] = %v, composition %v", i, y[i], yc[i])
				}
			}
			for i := range dxc {
				if dx[i] != dxc[i] { // == : the composition's sums of zeros may turn −0 into +0
					t.Fatalf("dqkv[%d] = %v, composition %v", i, dx[i], dxc[i])
				}
			}
		})
	}
}

// TestLNDxSums4MatchesLNDxSums: the four-row sums of LayerNorm's input gradient are each row's own,
// bit for bit.
func TestLNDxSums4MatchesLNDxSums(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 3, 128, 129} {
		x, dy, g, st := make([]float32, 4*n), make([]float32, 4*n), make([]float32, n), make([]float32, 8)
		for i := range x {
			x[i], dy[i] = float32(r.NormFloat64()*3+1), float32(r.NormFloat64())
		}
		for i := range g {
			g[i] = float32(r.NormFloat64())
		}
		for i := range 4 {
			st[2*i], st[2*i+1] = lnStats(x[i*n : (i+1)*n])
		}
		s1, s2 := lnDxSums4(x, dy, g, st, 0, n)
		for i := range 4 {
			a, b := lnDxSums(x, dy, g, st, i, n)
			if math.Float64bits(a) != math.Float64bits(s1[i]) || math.Float64bits(b) != math.Float64bits(s2[i]) {
				t.Fatalf("n=%d row %d: (%v, %v), one row at a time (%v, %v)", n, i, s1[i], s2[i], a, b)
			}
		}
	}
}
