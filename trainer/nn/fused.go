package nn

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Fused operations.
//
// Composed from gorgonia's primitives, a GELU is nine elementwise nodes forward and about fifteen
// backward, a LayerNorm a dozen plus broadcasts (which gorgonia implements by materialising a
// repeated copy), and a bias add a repeat and an add; each node is a pass over memory and, for
// unary ops, an allocation. kernel turns one such function into a single gorgonia op with a
// hand-written forward loop and a hand-written gradient (itself made of kernels), so the graph
// stays a gorgonia graph, differentiated by gorgonia's Grad and run by the executor (exec.go).
//
// Every kernel is checked against central finite differences of a float64 reference, through the
// models' gradient checks (ref_test.go, gpt_test.go) and directly (fused_test.go).

// kernel is a gorgonia op computing one float32 output from its inputs with a Go loop.
//
// A kernel whose loop runs through par.Runs makes that loop's closure once, when the graph is
// built, over variables run sets to the operands of the current run: a closure made inside run
// would be allocated on every run (par.Runs may hand it to other goroutines). That is safe because
// a graph runs one op at a time and each kernel belongs to one graph.
type kernel struct {
	name    string // identifies the op and its parameters (String, hashes)
	inDims  []int  // dimensions of each input
	outDims int
	// shape returns the output shape for the input shapes.
	shape func(in []tensor.Shape) (tensor.Shape, error)
	// run writes the output (every element) from the inputs, all dense row-major float32.
	run func(out []float32, outShape tensor.Shape, in [][]float32, inShapes []tensor.Shape)
	// grad builds the gradient nodes of the inputs (nil where wrt is false); nil for kernels that
	// are themselves gradients and are never differentiated.
	grad func(in G.Nodes, out, dout *G.Node) (G.Nodes, error)
	wrt  []bool

	// Reused by every run (a graph runs one op at a time): the inputs' data and shapes, and the
	// output shape last computed with the input shapes it was computed for.
	inData           [][]float32
	inShapes, lastIn []tensor.Shape
	outShape         tensor.Shape
}

var (
	_ G.SDOp            = (*kernel)(nil)
	_ G.UsePreallocDoer = (*kernel)(nil)
)

// apply adds k to the graph over the given inputs.
func (k *kernel) apply(in ...*G.Node) (*G.Node, error) {
	if len(in) != len(k.inDims) {
		return nil, fmt.Errorf("%w: %s takes %d inputs, got %d", ErrGraph, k.name, len(k.inDims), len(in))
	}
	for i, n := range in {
		if n.Dims() != k.inDims[i] {
			return nil, fmt.Errorf("%w: %s input %d has %d dimensions, want %d", ErrGraph, k.name, i, n.Dims(), k.inDims[i])
		}
	}
	return G.ApplyOp(k, in...)
}

func (k *kernel) Arity() int { return len(k.inDims) }

func (k *kernel) Type() hm.Type {
	a := hm.TypeVariable('a')
	ts := make([]hm.Type, 0, len(k.inDims)+1)
	for _, d := range k.inDims {
		ts = append(ts, G.TensorType{Dims: d, Of: a})
	}
	ts = append(ts, G.TensorType{Dims: k.outDims, Of: a})
	return hm.NewFnType(ts...)
}

func (k *kernel) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	shapes, err := G.DimSizersToShapes(in)
	if err != nil {
		return nil, err
	}
	return k.shape(shapes)
}

func (k *kernel) inputs(vs []G.Value) ([][]float32, []tensor.Shape, error) {
	if len(vs) != len(k.inDims) {
		return nil, nil, fmt.Errorf("%w: %s takes %d inputs, got %d", ErrGraph, k.name, len(k.inDims), len(vs))
	}
	if len(k.inData) != len(vs) {
		k.inData, k.inShapes = make([][]float32, len(vs)), make([]tensor.Shape, len(vs))
	}
	data, shapes := k.inData, k.inShapes
	for i, v := range vs {
		d, ok := v.(*tensor.Dense)
		if ok && d.IsView() {
			m, ok := d.Materialize().(*tensor.Dense)
			if !ok {
				return nil, nil, fmt.Errorf("%w: %s input %d cannot be materialised", ErrGraph, k.name, i)
			}
			d = m
		}
		if ok && d.Dtype() == tensor.Float32 && !d.IsScalar() {
			data[i], shapes[i] = d.Float32s(), d.Shape() // Data would box a new slice header
			continue
		}
		f, ok := v.Data().([]float32)
		if !ok {
			return nil, nil, fmt.Errorf("%w: %s input %d is %T, want float32 data", ErrGraph, k.name, i, v.Data())
		}
		data[i], shapes[i] = f, v.Shape()
	}
	return data, shapes, nil
}

// output returns the output shape for the input shapes: the one computed last when the input
// shapes are the same (in a graph they always are).
func (k *kernel) output(shapes []tensor.Shape) (tensor.Shape, error) {
	if k.outShape != nil && len(k.lastIn) == len(shapes) {
		same := true
		for i, s := range shapes {
			same = same && s.Eq(k.lastIn[i])
		}
		if same {
			return k.outShape, nil
		}
	}
	s, err := k.shape(shapes)
	if err != nil {
		return nil, err
	}
	k.lastIn = k.lastIn[:0]
	for _, in := range shapes {
		k.lastIn = append(k.lastIn, in.Clone())
	}
	k.outShape = s
	return s, nil
}

// Do computes the output into a new tensor.
func (k *kernel) Do(vs ...G.Value) (G.Value, error) { return k.UsePreallocDo(nil, vs...) }

// UsePreallocDo computes the output into prealloc when it is a dense float32 tensor of the output's
// shape, else into a new tensor.
func (k *kernel) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	in, shapes, err := k.inputs(vs)
	if err != nil {
		return nil, err
	}
	s, err := k.output(shapes)
	if err != nil {
		return nil, err
	}
	d, ok := prealloc.(*tensor.Dense)
	if !ok || d.IsView() || !d.Shape().Eq(s) || d.Dtype() != tensor.Float32 {
		d = tensor.New(tensor.WithShape(s.Clone()...), tensor.Of(tensor.Float32))
	}
	k.run(d.Float32s(), s, in, shapes)
	return d, nil
}

func (k *kernel) ReturnsPtr() bool      { return false }
func (k *kernel) CallsExtern() bool     { return false }
func (k *kernel) OverwritesInput() int  { return -1 }
func (k *kernel) WriteHash(h hash.Hash) { fmt.Fprintf(h, "cohort.%s", k.name) }
func (k *kernel) String() string        { return k.name }

func (k *kernel) Hashcode() uint32 {
	h := fnv.New32a()
	k.WriteHash(h)
	return h.Sum32()
}

func (k *kernel) DiffWRT(n int) []bool {
	if k.grad == nil {
		return make([]bool, n)
	}
	return k.wrt
}

func (k *kernel) SymDiff(in G.Nodes, out, dout *G.Node) (G.Nodes, error) {
	if k.grad == nil {
		return nil, fmt.Errorf("%w: %s is not differentiable", ErrGraph, k.name)
	}
	return k.grad(in, out, dout)
}

// sameShape is the shape function of kernels whose output has the shape of input 0.
func sameShape(in []tensor.Shape) (tensor.Shape, error) { return in[0].Clone(), nil }

// rowsCols splits a shape into rows (all leading dimensions) and columns (the last).
func rowsCols(s tensor.Shape) (rows, cols int) {
	cols = s[len(s)-1]
	return s.TotalSize() / cols, cols
}
