package compress

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// TestTopKSelection compares the selection with the reference (full sort,
// ties to the smaller index) on inputs built to defeat the sampled
// threshold: ties everywhere, spikes only between sampled positions, ramps.
func TestTopKSelection(t *testing.T) {
	n := 3*4096 + 1500
	inputs := map[string][]float32{
		"gaussian": gaussian(n, 1, 1),
		"all equal": func() []float32 {
			x := make([]float32, n)
			for i := range x {
				x[i] = -0.25
			}
			return x
		}(),
		"spikes off the sample grid": func() []float32 {
			x := make([]float32, n)
			for i := range x {
				x[i] = 1e-30
				if i%16 == 7 {
					x[i] = float32(i)
				}
			}
			return x
		}(),
		"spikes on the sample grid": func() []float32 {
			x := make([]float32, n)
			for i := range x {
				x[i] = 1e-30 * float32(i%5+1)
				if i%16 == 0 {
					x[i] = -1
				}
			}
			return x
		}(),
		"ramp": func() []float32 {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(i) - float32(n)/2
			}
			return x
		}(),
		"few levels": func() []float32 {
			x := gaussian(n, 1, 2)
			for i := range x {
				x[i] = float32(math.Round(float64(x[i]))) + 1e-3
			}
			return x
		}(),
	}
	for _, setting := range []string{"topk:0.01", "topk:0.05/c2048", "topk:0.001/c65536", "topk:0.12/c1024", "topk:0.3/c4096"} {
		c := newTestCodec(t, setting, n, 1)
		for name, x := range inputs {
			msg, err := c.Encode(nil, x)
			if err != nil {
				t.Fatal(err)
			}
			d, err := c.Decode(nil, msg)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for i, v := range d {
				if v != 0 {
					got = append(got, i)
					if v != x[i] {
						t.Fatalf("%s %s: value %d decoded %g, want %g", setting, name, i, v, x[i])
					}
				}
			}
			if want := refTopK(c.set, c.cfg.Shape, x); !slices.Equal(got, want) {
				t.Fatalf("%s %s: kept %d indices %v…, reference keeps %d %v…", setting, name, len(got), got[:min(8, len(got))], len(want), want[:min(8, len(want))])
			}
			// A NaN or Inf anywhere (sampled or not) is rejected.
			for _, at := range []int{0, 7, 4096 + 3, n - 1} {
				y := slices.Clone(x)
				y[at] = float32(math.Inf(-1))
				if _, err := c.Encode(nil, y); !errors.Is(err, ErrNonFinite) {
					t.Fatalf("%s %s: Inf at %d: %v", setting, name, at, err)
				}
			}
		}
	}
}

func TestSelectKth(t *testing.T) {
	for _, a := range [][]uint32{
		{5}, {2, 1}, {3, 3, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, {9, 8, 7, 6, 5, 4, 3, 2, 1},
		func() []uint32 {
			r := gaussian(1000, 1, 3)
			v := make([]uint32, len(r))
			for i := range r {
				v[i] = uint32(math.Abs(float64(r[i])) * 10)
			}
			return v
		}(),
	} {
		sorted := slices.Sorted(slices.Values(a))
		for p := range a {
			b := slices.Clone(a)
			if got := selectKth(b, p); got != sorted[p] {
				t.Fatalf("selectKth(%v, %d) = %d, want %d", a, p, got, sorted[p])
			}
			for i := range b {
				if (i < p && b[i] > b[p]) || (i > p && b[i] < b[p]) {
					t.Fatalf("selectKth(%v, %d) left %v unpartitioned", a, p, b)
				}
			}
		}
	}
}

// TestEliasFano: writeEF/readEF round-trip every offset set shape, in
// exactly efBits bits.
func TestEliasFano(t *testing.T) {
	for _, mk := range [][2]int{{1, 1}, {2, 1}, {2, 2}, {8, 2}, {4, 1}, {4096, 41}, {4096, 4096}, {4096, 1}, {1000, 999}, {65536, 66}, {7, 3}} {
		m, k := mk[0], mk[1]
		for trial := range 5 {
			// A deterministic subset: k distinct offsets spread by a stride pattern.
			offs := make([]int32, 0, k)
			seen := make([]bool, m)
			pick := trial*7919 + 1
			for len(offs) < k {
				pick = (pick*1103515245 + 12345) & 0x7fffffff
				o := pick % m
				for seen[o] {
					o = (o + 1) % m
				}
				seen[o] = true
				offs = append(offs, int32(o))
			}
			slices.Sort(offs)
			if trial == 0 { // the extremes: the first k and the last k offsets
				for i := range offs {
					offs[i] = int32(i)
				}
			} else if trial == 1 {
				for i := range offs {
					offs[i] = int32(m - k + i)
				}
			}
			buf := make([]byte, (efBits(m, k)+7)/8+1)
			w := bitWriter{buf: buf}
			writeEF(&w, offs, m)
			w.flush()
			if w.pos != (efBits(m, k)+7)/8 {
				t.Fatalf("m=%d k=%d: wrote %d bytes, efBits says %d bits", m, k, w.pos, efBits(m, k))
			}
			got := make([]int32, k)
			rd := bitReader{buf: buf}
			if err := readEF(&rd, got, m); err != nil {
				t.Fatalf("m=%d k=%d: %v", m, k, err)
			}
			if !slices.Equal(got, offs) {
				t.Fatalf("m=%d k=%d: read %v, wrote %v", m, k, got, offs)
			}
		}
	}
}
