package nn

import (
	"fmt"
	"hash"
	"hash/fnv"

	"github.com/chewxy/hm"
	"github.com/viterin/vek/vek32"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// embed looks rows up: out[i] = table[idx[i]] for table [V, D] and idx [N] (Go ints), out [N, D].
// It computes what gorgonia's ByIndices along axis 0 computes, and its gradient sums the rows of
// dout into a zeroed [V, D] in the same order (index after index), so the same bits; unlike
// ByIndices, both write into a destination instead of allocating their result on every run
// (about 1 MB a step for the GPT's two tables).
func embed(table, idx *G.Node) (*G.Node, error) {
	if table.Dims() != 2 || idx.Dims() != 1 || idx.Dtype() != tensor.Int {
		return nil, fmt.Errorf("%w: embedding lookup of %v %v in %v %v, want int indices [N] in a table [V, D]", ErrGraph, idx.Dtype(), idx.Shape(), table.Dtype(), table.Shape())
	}
	return G.ApplyOp(embedOp{}, table, idx)
}

// embedOp is embed's forward op; embedGradOp (V rows) its gradient with respect to the table.
type (
	embedOp     struct{}
	embedGradOp struct{ V int }
)

var (
	_ G.SDOp            = embedOp{}
	_ G.UsePreallocDoer = embedOp{}
	_ G.UsePreallocDoer = embedGradOp{}
)

// lookupType is the type of both ops: a float matrix and an int vector to a float matrix.
func lookupType() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: tensor.Int}, G.TensorType{Dims: 2, Of: a})
}

// lookupArgs checks the two inputs of either op: a dense float32 matrix and a dense int vector.
func lookupArgs(name string, vs []G.Value) (m []float32, rows, cols int, idx []int, err error) {
	if len(vs) != 2 {
		return nil, 0, 0, nil, fmt.Errorf("%w: %s takes 2 inputs, got %d", ErrGraph, name, len(vs))
	}
	md, ok := vs[0].(*tensor.Dense)
	if ok && md.IsView() {
		md, ok = md.Materialize().(*tensor.Dense)
	}
	if !ok || md.Dtype() != tensor.Float32 || md.Dims() != 2 {
		return nil, 0, 0, nil, fmt.Errorf("%w: %s input 0 is %T, want a dense float32 matrix", ErrGraph, name, vs[0])
	}
	id, ok := vs[1].(*tensor.Dense)
	if !ok || id.Dtype() != tensor.Int || id.IsView() {
		return nil, 0, 0, nil, fmt.Errorf("%w: %s input 1 is %T, want dense ints", ErrGraph, name, vs[1])
	}
	s := md.Shape()
	return md.Float32s(), s[0], s[1], id.Ints(), nil
}

// destination returns prealloc when it is a dense float32 [rows, cols], else a new one.
func destination(prealloc G.Value, rows, cols int) *tensor.Dense {
	d, ok := prealloc.(*tensor.Dense)
	if ok && !d.IsView() && d.Dtype() == tensor.Float32 && d.Dims() == 2 && d.Shape()[0] == rows && d.Shape()[1] == cols {
		return d
	}
	return tensor.New(tensor.WithShape(rows, cols), tensor.Of(tensor.Float32))
}

func (embedOp) Arity() int                   { return 2 }
func (embedOp) Type() hm.Type                { return lookupType() }
func (embedOp) ReturnsPtr() bool             { return false }
func (embedOp) CallsExtern() bool            { return false }
func (embedOp) OverwritesInput() int         { return -1 }
func (embedOp) WriteHash(h hash.Hash)        { fmt.Fprint(h, "cohort.embed") }
func (embedOp) String() string               { return "embed" }
func (embedOp) DiffWRT(n int) []bool         { return []bool{true, false}[:min(n, 2)] }
func (op embedOp) Hashcode() uint32          { return hashOf(op) }
func (embedGradOp) Arity() int               { return 2 }
func (embedGradOp) Type() hm.Type            { return lookupType() }
func (embedGradOp) ReturnsPtr() bool         { return false }
func (embedGradOp) CallsExtern() bool        { return false }
func (embedGradOp) OverwritesInput() int     { return -1 }
func (op embedGradOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "cohort.embed.grad(%d)", op.V) }
func (op embedGradOp) String() string        { return fmt.Sprintf("embed.grad(%d)", op.V) }
func (op embedGradOp) Hashcode() uint32      { return hashOf(op) }

// hashOf is the FNV-32a hash of what an op writes with WriteHash.
func hashOf(op interface{ WriteHash(hash.Hash) }) uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}

func (embedOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	s, err := G.DimSizersToShapes(in)
	if err != nil {
		return nil, err
	}
	if len(s) != 2 || len(s[0]) != 2 {
		return nil, fmt.Errorf("%w: embed of shapes %v", ErrGraph, s)
	}
	return tensor.Shape{s[1].TotalSize(), s[0][1]}, nil
}

func (op embedOp) SymDiff(in G.Nodes, _, dout *G.Node) (G.Nodes, error) {
	if len(in) != 2 {
		return nil, fmt.Errorf("%w: embed has 2 inputs, got %d", ErrGraph, len(in))
	}
	d, err := G.ApplyOp(embedGradOp{V: in[0].Shape()[0]}, dout, in[1])
	return G.Nodes{d, nil}, err
}

func (op embedOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

// UsePreallocDo writes the rows of the table the indices name into prealloc (or a new tensor).
func (embedOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	table, V, D, idx, err := lookupArgs("embed", vs)
	if err != nil {
		return nil, err
	}
	d := destination(prealloc, len(idx), D)
	out := d.Float32s()
	for i, t := range idx {
		if t < 0 || t >= V {
			return nil, fmt.Errorf("%w: embed index %d is %d, want 0 ≤ index < %d", ErrGraph, i, t, V)
		}
		copy(out[i*D:(i+1)*D], table[t*D:(t+1)*D])
	}
	return d, nil
}

func (op embedGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	s, err := G.DimSizersToShapes(in)
	if err != nil {
		return nil, err
	}
	if len(s) != 2 || len(s[0]) != 2 {
		return nil, fmt.Errorf("%w: embed gradient of shapes %v", ErrGraph, s)
	}
	return tensor.Shape{op.V, s[0][1]}, nil
}

func (op embedGradOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

// UsePreallocDo clears prealloc (or a new [V, D]) and adds row i of dout into the row idx[i], for
// i = 0, 1, …: the order ByIndices' gradient adds them in.
func (op embedGradOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	dout, N, D, idx, err := lookupArgs("embed.grad", vs)
	if err != nil {
		return nil, err
	}
	if len(idx) != N {
		return nil, fmt.Errorf("%w: embed gradient of %d rows for %d indices", ErrGraph, N, len(idx))
	}
	d := destination(prealloc, op.V, D)
	g := d.Float32s()
	clear(g)
	for i, t := range idx {
		if t < 0 || t >= op.V {
			return nil, fmt.Errorf("%w: embed index %d is %d, want 0 ≤ index < %d", ErrGraph, i, t, op.V)
		}
		vek32.Add_Inplace(g[t*D:(t+1)*D], dout[i*D:(i+1)*D])
	}
	return d, nil
}
