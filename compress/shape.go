package compress

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// Segment describes a contiguous range of the coded vector that is a
// row-major Rows×Cols matrix: element (i, j) is x[Offset + i*Cols + j].
type Segment struct {
	Offset, Rows, Cols int
}

// Len returns Rows*Cols.
func (s Segment) Len() int { return s.Rows * s.Cols }

// Shape tells the codec which ranges of the coded vector are matrices. Only
// low-rank settings use the matrices; every setting puts the Shape's hash in
// the message header so that a receiver with another Shape detects it.
// Segments must be sorted by Offset and must not overlap; values outside every
// segment are allowed (they are coded as a vector). A nil Shape is valid.
type Shape []Segment

// Len returns the end of the last segment (0 for an empty Shape): the least
// length of a vector coded with s.
func (s Shape) Len() int {
	if len(s) == 0 {
		return 0
	}
	last := s[len(s)-1]
	return last.Offset + last.Len()
}

// Validate reports whether segments are sorted, non-overlapping, of positive
// size and with offsets ≥ 0 and sizes that do not overflow.
func (s Shape) Validate() error {
	end := 0
	for i, g := range s {
		if g.Offset < end || g.Rows < 1 || g.Cols < 1 || g.Rows > maxShapeDim || g.Cols > maxShapeDim ||
			g.Offset > maxShapeEnd-g.Rows*g.Cols {
			return fmt.Errorf("%w: shape segment %d %+v: want Offset ≥ %d, 1 ≤ Rows, Cols ≤ %d and end ≤ %d",
				ErrConfig, i, g, end, maxShapeDim, maxShapeEnd)
		}
		end = g.Offset + g.Len()
	}
	return nil
}

const (
	maxShapeDim = 1 << 31
	maxShapeEnd = 1 << 50
)

// Hash returns the 64-bit FNV-1a hash of the segments (each as three
// little-endian uint64: Offset, Rows, Cols), or 0 for an empty Shape. It is
// the shape reference in message headers.
func (s Shape) Hash() uint64 {
	if len(s) == 0 {
		return 0
	}
	h := fnv.New64a()
	var b [24]byte
	for _, g := range s {
		binary.LittleEndian.PutUint64(b[0:], uint64(g.Offset))
		binary.LittleEndian.PutUint64(b[8:], uint64(g.Rows))
		binary.LittleEndian.PutUint64(b[16:], uint64(g.Cols))
		h.Write(b[:])
	}
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// Slice returns the Shape of the sub-vector x[lo:hi] (offsets relative to
// lo), for coding a slice of a vector on its own (streaming slices). A
// matrix segment cut by the slice keeps the whole rows that fall inside it;
// the cut parts of rows become plain values.
func (s Shape) Slice(lo, hi int) Shape {
	var out Shape
	for _, g := range s {
		start, end := max(lo, g.Offset), min(hi, g.Offset+g.Len())
		if start >= end {
			continue
		}
		first := (start - g.Offset + g.Cols - 1) / g.Cols // first whole row inside
		last := (end - g.Offset) / g.Cols                 // one past the last whole row
		if last > first {
			out = append(out, Segment{Offset: g.Offset + first*g.Cols - lo, Rows: last - first, Cols: g.Cols})
		}
	}
	return out
}
