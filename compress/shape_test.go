package compress

import (
	"slices"
	"testing"
)

func TestShapeSlice(t *testing.T) {
	s := Shape{{Offset: 2, Rows: 4, Cols: 3}, {Offset: 14, Rows: 1, Cols: 5}, {Offset: 20, Rows: 3, Cols: 10}}
	cases := []struct {
		lo, hi int
		want   Shape
	}{
		{0, 50, s},
		{0, 2, nil},
		{2, 14, Shape{{Offset: 0, Rows: 4, Cols: 3}}},
		{3, 14, Shape{{Offset: 2, Rows: 3, Cols: 3}}}, // first row cut
		{2, 10, Shape{{Offset: 0, Rows: 2, Cols: 3}}}, // last rows cut
		{4, 7, nil}, // no whole row
		{10, 40, Shape{{Offset: 1, Rows: 1, Cols: 3}, {Offset: 4, Rows: 1, Cols: 5}, {Offset: 10, Rows: 2, Cols: 10}}},
		{25, 50, Shape{{Offset: 5, Rows: 2, Cols: 10}}},
	}
	for _, tc := range cases {
		got := s.Slice(tc.lo, tc.hi)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Slice(%d, %d) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
		if err := got.Validate(); err != nil || got.Len() > tc.hi-tc.lo {
			t.Errorf("Slice(%d, %d) = %v: invalid for a slice of %d values (%v)", tc.lo, tc.hi, got, tc.hi-tc.lo, err)
		}
	}
}

func TestShapeHash(t *testing.T) {
	a := Shape{{Offset: 0, Rows: 2, Cols: 3}}
	b := Shape{{Offset: 0, Rows: 3, Cols: 2}}
	if a.Hash() == b.Hash() || a.Hash() == 0 || Shape(nil).Hash() != 0 {
		t.Fatalf("hashes: %x %x %x", a.Hash(), b.Hash(), Shape(nil).Hash())
	}
	if a.Hash() != (Shape{{Offset: 0, Rows: 2, Cols: 3}}).Hash() {
		t.Fatal("hash is not a function of the segments")
	}
}
