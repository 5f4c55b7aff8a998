package datasets

import (
	"errors"
	"slices"
	"testing"
)

func TestBatcher(t *testing.T) {
	idx := []int{3, 5, 8, 13, 21, 34, 55, 89, 144, 233}
	b, err := NewBatcher(idx, 5, 9)
	if err != nil {
		t.Fatal(err)
	}
	var epochs [3][]int
	for e := range epochs {
		epochs[e] = append(b.Next(nil), b.Next(nil)...)
		if b.Epoch() != uint64(e+1) || b.Pos() != 0 {
			t.Fatalf("after epoch %d: epoch %d pos %d", e, b.Epoch(), b.Pos())
		}
		got := slices.Clone(epochs[e])
		slices.Sort(got)
		if !slices.Equal(got, idx) {
			t.Errorf("epoch %d dealt %v, want each of %v once", e, epochs[e], idx)
		}
	}
	if slices.Equal(epochs[0], epochs[1]) && slices.Equal(epochs[1], epochs[2]) {
		t.Error("every epoch has the same order")
	}
	// Same seed, same sequence; a batch size not dividing n wraps epochs.
	b1, _ := NewBatcher(idx, 3, 4)
	b2, _ := NewBatcher(idx, 3, 4)
	var seq []int
	for range 7 {
		x := b1.Next(nil)
		if len(x) != 3 || !slices.Equal(x, b2.Next(nil)) {
			t.Fatal("batchers with the same seed diverge")
		}
		seq = append(seq, x...)
	}
	first := slices.Clone(seq[:10])
	slices.Sort(first)
	if !slices.Equal(first, idx) {
		t.Errorf("first 10 of a wrapping sequence %v are not one epoch", seq[:10])
	}
	// Resume from (epoch, pos).
	b3, _ := NewBatcher(idx, 3, 4)
	if err := b3.Seek(1, 2); err != nil {
		t.Fatal(err)
	}
	if got := b3.Next(nil); !slices.Equal(got, seq[12:15]) {
		t.Errorf("after Seek(1,2): %v, want %v", got, seq[12:15])
	}
	if err := b3.Seek(0, 10); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Seek past the end: %v", err)
	}
	for _, bad := range []struct {
		idx  []int
		size int
	}{{nil, 1}, {idx, 0}} {
		if _, err := NewBatcher(bad.idx, bad.size, 1); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("NewBatcher(%v, %d): %v", bad.idx, bad.size, err)
		}
	}
}
