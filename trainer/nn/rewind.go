package nn

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Rewinding a tape machine instead of resetting it.
//
// gorgonia v0.9.18's tape machine keeps every intermediate value in a bank of registers. Reset, the
// only exported way back to the first instruction, also empties the bank, so every run allocated
// every intermediate tensor again and every op whose destination was empty took its allocating path
// (elementwise ops clone their input): for the GPT about 240 MB and 40,000 allocations per step and
// a third of its time in memmove. rewind instead moves the program counter back to the first
// instruction and keeps the bank, so an op writes into the tensor its register held last run (its
// UsePreallocDo path), as ops already do within one run when the compiler reuses a register.
//
// Two kinds of register must not be kept, and rewind empties them:
//   - the destination of an op that adds into its destination instead of overwriting it
//     (gorgonia's sliceIncrOp, the gradient of Slice: it needs a zeroed tensor, which only a fresh
//     allocation gives it);
//   - a register whose tensor shares memory with a value bound to a leaf of the graph (parameters,
//     inputs, constants): a reshape or transpose of a parameter may be a view of it, and the first
//     op to write that register next run would write into the parameter.
//
// The counter and the bank are unexported fields, located by reflection once. If a gorgonia version
// without them were linked, rewind reports false and programs fall back to Reset (slower, same
// results). rewind_test.go checks that repeated runs give bit-identical losses and gradients to a
// fresh model, leave parameters alone, and allocate little.

// tapeFields locates the program counter and register bank of gorgonia's tape machine type t.
type tapeFields struct {
	t              reflect.Type
	pc, cpumem     uintptr
	ok             bool
	notFoundReason string
}

func findTapeFields(t reflect.Type) tapeFields {
	tf := tapeFields{t: t}
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || t.Elem().PkgPath() != "gorgonia.org/gorgonia" {
		tf.notFoundReason = fmt.Sprintf("VM type %v is not gorgonia's tape machine", t)
		return tf
	}
	pc, ok := t.Elem().FieldByName("pc")
	if !ok || pc.Type.Kind() != reflect.Int {
		tf.notFoundReason = "tape machine has no int field pc"
		return tf
	}
	mem, ok := t.Elem().FieldByName("cpumem")
	if !ok || mem.Type != reflect.TypeOf([]G.Value(nil)) {
		tf.notFoundReason = "tape machine has no []Value field cpumem"
		return tf
	}
	tf.pc, tf.cpumem, tf.ok = pc.Offset, mem.Offset, true
	return tf
}

var tape struct {
	once sync.Once
	tapeFields
}

// tapeOf returns the field locations for vm's type; the first VM seen fixes the type.
func tapeOf(vm G.VM) (tapeFields, bool) {
	t := reflect.TypeOf(vm)
	tape.once.Do(func() { tape.tapeFields = findTapeFields(t) })
	return tape.tapeFields, tape.ok && t == tape.t
}

// memRange is the byte range [lo, hi) of a bound leaf value.
type memRange struct{ lo, hi uintptr }

// rewinder holds what rewind must know about one compiled program.
type rewinder struct {
	incr  []*G.Node  // nodes whose ops add into their destination
	bound []memRange // memory of the values bound to the graph's leaves
}

// newRewinder collects the accumulating nodes and the bound leaf memory of the graph a machine runs.
func newRewinder(g *G.ExprGraph) *rewinder {
	r := &rewinder{}
	for _, n := range g.AllNodes() {
		if n.Op() != nil && fmt.Sprintf("%T", n.Op()) == "gorgonia.sliceIncrOp" {
			r.incr = append(r.incr, n)
		}
		if g.From(n.ID()).Len() == 0 { // a leaf: a parameter, an input or a constant
			if m, ok := n.Value().(tensor.Memory); ok && m.MemSize() > 0 {
				r.bound = append(r.bound, memRange{m.Uintptr(), m.Uintptr() + m.MemSize()})
			}
		}
	}
	return r
}

// aliasesBound reports whether v's memory overlaps a bound leaf value.
func (r *rewinder) aliasesBound(v G.Value) bool {
	m, ok := v.(tensor.Memory)
	if !ok {
		return false
	}
	lo, hi := m.Uintptr(), m.Uintptr()+m.MemSize()
	for _, b := range r.bound {
		if lo < b.hi && b.lo < hi {
			return true
		}
	}
	return false
}

// rewind sets vm's program counter to the first instruction and keeps its registers, except those
// holding the tensors of accumulating ops or tensors that share memory with bound leaves. It reports
// false (and changes nothing) when vm is not a tape machine whose fields it can reach.
func (r *rewinder) rewind(vm G.VM) bool {
	tf, ok := tapeOf(vm)
	if !ok {
		return false
	}
	base := reflect.ValueOf(vm).UnsafePointer()
	regs := *(*[]G.Value)(unsafe.Add(base, tf.cpumem))
	for i, v := range regs {
		if v == nil {
			continue
		}
		drop := r.aliasesBound(v)
		for _, n := range r.incr {
			if drop {
				break
			}
			drop = n.Value() == v
		}
		if drop {
			regs[i] = nil
		}
	}
	*(*int)(unsafe.Add(base, tf.pc)) = 0
	return true
}
