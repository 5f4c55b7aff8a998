package nn

import (
	"fmt"

	"github.com/viterin/vek/vek32"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The executor: how a compiled graph runs.
//
// gorgonia's tape machine allocates on every run: each instruction builds its input list anew, it
// runs the program on a goroutine of its own (where a panic cannot be recovered), and unless its
// register bank is kept between runs, every op takes its allocating path. executor runs the op
// nodes of a graph itself, planned once:
//
//   - the nodes in the order gorgonia's compiler gives them (its stable topological sort, reversed),
//     with gorgonia's common-subexpression elimination (a node whose hash equals an earlier node's
//     reads that node's value instead of running), so it runs the same ops on the same operands as
//     the tape machine would;
//   - for every op node, its input slots and an argument list, reused every run;
//   - for every op node that can take a destination (G.UsePreallocDoer), the tensor its first run
//     returned, written in place by every later run.
//
// Two kinds of result must not be a destination, and keep taking Do:
//   - a result that shares memory with one of its inputs or with a value bound to a leaf of the
//     graph (parameters, inputs, constants): a reshape or transpose may be a view, and writing it
//     would write the tensor it views. Such a view, when its inputs are the same tensors as last
//     run, is the same view again and is reused without running its op;
//   - a result that is not a dense, contiguous tensor of the node's shape (scalars, views).
//
// An op that adds into its destination instead of overwriting it (gorgonia's sliceIncrOp, the
// gradient of Slice) gets its destination zeroed before each run: the fresh tensor Do would give it.
//
// The sum of two dense float32 tensors of the destination's shape (the residual additions, and
// the sums Grad makes of a node's gradient contributions) is computed here, without the function
// options and iterators gorgonia's Add allocates: float32 addition is correctly rounded, so the
// same bits.
type executor struct {
	vals   []G.Value     // one slot per distinct node: the values of the current run
	leaves []leafSlot    // slots refreshed from the nodes' bound values at the start of a run
	steps  []step        // the op nodes in execution order
	slots  map[int64]int // node ID → its slot
	bound  []memRange    // memory of the values bound to leaves, at planning time
	warm   bool          // a run has completed: destinations and reusable views are known
}

// leafSlot is a leaf of the graph (a parameter, an input or a constant) and its slot.
type leafSlot struct {
	n    *G.Node
	slot int
}

// step is one op node's execution.
type step struct {
	n    *G.Node
	op   G.Op
	pd   G.UsePreallocDoer // non-nil when the op can write a destination
	args []int             // the slots of the op's inputs
	in   []G.Value         // the argument list, refilled from args every run
	last []G.Value         // the inputs of the previous run (view steps only)
	out  int               // the node's slot
	dst  G.Value           // the destination, written in place; nil: Do every run
	view bool              // the result shares memory with an input: reuse it while they stay
	zero bool              // the op adds into its destination: clear it first
	add  bool              // the op is gorgonia's tensor addition
}

// memRange is the byte range [lo, hi) of a tensor's memory.
type memRange struct{ lo, hi uintptr }

// newExecutor plans the execution of the op nodes of g, a graph pruned to what its roots need.
func newExecutor(g *G.ExprGraph) (*executor, error) {
	sorted, err := G.Sort(g)
	if err != nil {
		return nil, fmt.Errorf("%w: sorting graph: %w", ErrGraph, err)
	}
	for i, j := 0, len(sorted)-1; i < j; i, j = i+1, j-1 {
		sorted[i], sorted[j] = sorted[j], sorted[i]
	}
	e := &executor{slots: make(map[int64]int, len(sorted))}

	// Common-subexpression elimination as gorgonia's compiler does it: leaves first, in ID order
	// (a later leaf with the same hash wins), then every node in execution order (the first node
	// of a hash wins).
	uniques := make(map[uint32]*G.Node)
	for _, n := range g.AllNodes() {
		if g.From(n.ID()).Len() == 0 {
			uniques[n.Hashcode()] = n
		}
	}
	repl := make(map[*G.Node]*G.Node, len(sorted))
	for _, n := range sorted {
		r, ok := uniques[n.Hashcode()]
		if !ok {
			uniques[n.Hashcode()] = n
			r = n
		}
		repl[n] = r
	}

	slotOf := func(n *G.Node) int {
		r := repl[n]
		if s, ok := e.slots[r.ID()]; ok {
			return s
		}
		s := len(e.vals)
		e.vals = append(e.vals, nil)
		e.slots[r.ID()] = s
		return s
	}
	for _, n := range sorted {
		slot := slotOf(n)
		e.slots[n.ID()] = slot
		if repl[n] != n {
			continue // its replacement runs (or is loaded) instead
		}
		children := g.From(n.ID())
		if n.Op() == nil || children.Len() == 0 {
			if n.Value() == nil {
				return nil, fmt.Errorf("%w: no value bound to leaf %v", ErrGraph, n)
			}
			e.leaves = append(e.leaves, leafSlot{n: n, slot: slot})
			if m, ok := n.Value().(tensor.Memory); ok && m.MemSize() > 0 {
				e.bound = append(e.bound, memRange{m.Uintptr(), m.Uintptr() + m.MemSize()})
			}
			continue
		}
		typ := fmt.Sprintf("%T", n.Op())
		s := step{n: n, op: n.Op(), out: slot, zero: typ == "gorgonia.sliceIncrOp",
			add: typ == "gorgonia.elemBinOp" && fmt.Sprint(n.Op()) == "+ false"}
		s.pd, _ = n.Op().(G.UsePreallocDoer)
		for children.Next() {
			c, ok := children.Node().(*G.Node)
			if !ok {
				return nil, fmt.Errorf("%w: child of %v is %T", ErrGraph, n, children.Node())
			}
			s.args = append(s.args, slotOf(c))
		}
		s.in = make([]G.Value, len(s.args))
		e.steps = append(e.steps, s)
	}
	return e, nil
}

// run executes every step once. The first run takes every op's allocating path (Do) and keeps
// what it returned as the step's destination or reusable view; later runs write into those. After
// a failed run the next run starts over as a first run.
//
// Callers validate inputs (lengths, label and token ranges) before running; the recover only turns
// a panic inside an op into an error.
func (e *executor) run() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic: %v", ErrGraph, r)
		}
		if err != nil {
			e.reset()
		}
	}()
	for _, l := range e.leaves {
		e.vals[l.slot] = l.n.Value()
	}
	for i := range e.steps {
		if err := e.exec(&e.steps[i]); err != nil {
			return err
		}
	}
	e.warm = true
	return nil
}

// exec runs one step: it gathers the step's inputs and writes its result into its slot.
func (e *executor) exec(s *step) (err error) {
	for j, a := range s.args {
		s.in[j] = e.vals[a]
	}
	if s.view && sameValues(s.in, s.last) {
		return nil // the same view of the same tensors: its slot still holds it
	}
	var v G.Value
	switch {
	case s.add && s.dst != nil && addDense(s.dst, s.in):
		v = s.dst
	case s.dst != nil:
		if s.zero {
			if err := zeroValue(s.dst); err != nil {
				return fmt.Errorf("%w: %v: %w", ErrGraph, s.n, err)
			}
		}
		v, err = s.pd.UsePreallocDo(s.dst, s.in...)
	default:
		v, err = s.op.Do(s.in...)
	}
	if err != nil {
		return fmt.Errorf("%w: %v: %w", ErrGraph, s.n, err)
	}
	if !e.warm {
		e.classify(s, v)
	}
	if s.view {
		copy(s.last, s.in)
	}
	e.vals[s.out] = v
	return nil
}

// classify decides, from its first result v, how a step runs from now on.
func (e *executor) classify(s *step, v G.Value) {
	m, ok := v.(tensor.Memory)
	if !ok || m.MemSize() == 0 {
		return
	}
	r := memRange{m.Uintptr(), m.Uintptr() + m.MemSize()}
	for _, in := range s.in {
		if im, ok := in.(tensor.Memory); ok && im.MemSize() > 0 && r.overlaps(memRange{im.Uintptr(), im.Uintptr() + im.MemSize()}) {
			s.view = true
			s.last = make([]G.Value, len(s.in))
			return
		}
	}
	for _, b := range e.bound {
		if r.overlaps(b) {
			return // a view of a leaf through other steps: never a destination
		}
	}
	d, ok := v.(*tensor.Dense)
	if s.pd == nil || !ok || d.IsView() || !d.Shape().Eq(s.n.Shape()) {
		return
	}
	s.dst = v
}

// reset forgets the destinations and views, so that the next run starts as a first run.
func (e *executor) reset() {
	e.warm = false
	for i := range e.steps {
		s := &e.steps[i]
		s.dst, s.view, s.last = nil, false, nil
	}
	clear(e.vals)
}

// value returns n's value in the last run, nil if n is not in the graph.
func (e *executor) value(n *G.Node) G.Value {
	s, ok := e.slots[n.ID()]
	if !ok {
		return nil
	}
	return e.vals[s]
}

func (r memRange) overlaps(o memRange) bool { return r.lo < o.hi && o.lo < r.hi }

// sameValues reports whether a and b hold the same tensors, element by element.
func sameValues(a, b []G.Value) bool {
	for i := range a {
		if !sameValue(a[i], b[i]) {
			return false
		}
	}
	return true
}

// sameValue reports whether a and b are the same tensor object (pointer identity).
func sameValue(a, b G.Value) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	da, ok1 := a.(*tensor.Dense)
	db, ok2 := b.(*tensor.Dense)
	return ok1 && ok2 && da == db
}

// addDense writes in[0] + in[1] into dst when all three are dense float32 tensors of one shape
// and reports whether it did.
func addDense(dst G.Value, in []G.Value) bool {
	if len(in) != 2 {
		return false
	}
	d, ok1 := dst.(*tensor.Dense)
	a, ok2 := in[0].(*tensor.Dense)
	b, ok3 := in[1].(*tensor.Dense)
	if !ok1 || !ok2 || !ok3 || a.IsMaterializable() || b.IsMaterializable() || d.IsMaterializable() ||
		a.Dtype() != tensor.Float32 || b.Dtype() != tensor.Float32 || d.Dtype() != tensor.Float32 ||
		!a.Shape().Eq(d.Shape()) || !b.Shape().Eq(d.Shape()) {
		return false
	}
	vek32.Add_Into(d.Float32s(), a.Float32s(), b.Float32s())
	return true
}

// zeroValue clears a dense tensor's memory.
func zeroValue(v G.Value) error {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return fmt.Errorf("cannot clear a destination of type %T", v)
	}
	d.Zero()
	return nil
}
