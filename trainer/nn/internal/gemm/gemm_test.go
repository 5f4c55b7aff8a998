package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/viterin/vek/vek32"
)

// operands holds a product's random operands, stored as transA and transB say, with row
// strides pad floats longer than their rows.
type operands struct {
	transA, transB bool
	m, n, k        int
	a, b           []float32
	lda, ldb, ldc  int
}

func newOperands(r *rand.Rand, transA, transB bool, m, n, k, pad int) operands {
	o := operands{transA: transA, transB: transB, m: m, n: n, k: k}
	aRows, aCols := m, k
	if transA {
		aRows, aCols = k, m
	}
	bRows, bCols := k, n
	if transB {
		bRows, bCols = n, k
	}
	o.lda, o.ldb, o.ldc = max(1, aCols+pad), max(1, bCols+pad), max(1, n+pad)
	o.a = randomSlice(r, max(0, (aRows-1)*o.lda+aCols))
	o.b = randomSlice(r, max(0, (bRows-1)*o.ldb+bCols))
	return o
}

func randomSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// at returns op(A)(i, q) and op(B)(q, j).
func (o operands) atA(i, q int) float32 {
	if o.transA {
		return o.a[q*o.lda+i]
	}
	return o.a[i*o.lda+q]
}

func (o operands) atB(q, j int) float32 {
	if o.transB {
		return o.b[j*o.ldb+q]
	}
	return o.b[q*o.ldb+j]
}

// run computes the product with Sgemm into a fresh C, whose padding holds NaNs (which must stay).
func (o operands) run(t testing.TB) []float32 {
	c := make([]float32, max(0, (o.m-1)*o.ldc+o.n))
	for i := range c {
		c[i] = float32(math.NaN())
	}
	if err := Sgemm(o.transA, o.transB, o.m, o.n, o.k, o.a, o.lda, o.b, o.ldb, c, o.ldc); err != nil {
		t.Fatalf("%v: %v", o, err)
	}
	return c
}

// check compares c against the product in float64, within a tolerance relative to the sum of the
// terms' magnitudes, and checks that C's padding is untouched. Of large products it checks every
// seventh row and column (every 29th with -short or -race) and the last two row strips and column
// strips (edge tiles) only.
func (o operands) check(t testing.TB, c []float32) {
	large, every := o.m*o.n*o.k > 1<<21, 7
	if testing.Short() || raceEnabled {
		every = 29
	}
	for i := range o.m {
		if large && i%every != 0 && i < o.m-2*mr {
			continue
		}
		for j := range o.n {
			if large && j%every != 0 && j < o.n-2*nr {
				continue
			}
			var sum, mag float64
			for q := range o.k {
				p := float64(o.atA(i, q)) * float64(o.atB(q, j))
				sum += p
				mag += math.Abs(p)
			}
			got := float64(c[i*o.ldc+j])
			if math.Abs(got-sum) > 1e-6*(mag+1)*math.Sqrt(float64(o.k+1)) || math.IsNaN(got) {
				t.Fatalf("%v: C(%d, %d) = %v, want %v", o.shape(), i, j, got, sum)
			}
		}
		for j := o.n; j < o.ldc && i*o.ldc+j < len(c); j++ {
			if !math.IsNaN(float64(c[i*o.ldc+j])) {
				t.Fatalf("%v: C's padding (%d, %d) written", o.shape(), i, j)
			}
		}
	}
}

func (o operands) shape() string {
	return fmt.Sprintf("%dx%dx%d tA=%v tB=%v lda=%d ldb=%d ldc=%d", o.m, o.n, o.k, o.transA, o.transB, o.lda, o.ldb, o.ldc)
}

// shapes are m × n × k: ones, sizes around the tile (6 × 16) and the blocks (mc 144, kc 256),
// odd sizes, a k long enough for two groups of k blocks (7 × 70 × 20000) and an n for two column
// blocks (9 × 1100 × 1000), and the GPT's products (forward and the backward's transposed ones).
var shapes = [][3]int{
	{1, 1, 1}, {1, 16, 1}, {6, 1, 1}, {1, 1, 300}, {5, 15, 3}, {6, 16, 7}, {7, 17, 9},
	{12, 32, 256}, {13, 33, 257}, {95, 31, 255}, {97, 47, 513}, {143, 20, 30}, {145, 33, 260}, {289, 40, 300}, {193, 65, 129}, {37, 129, 70},
	{101, 7, 9}, {3, 500, 300}, {64, 64, 32}, {200, 3, 40}, {7, 70, 20000}, {9, 1100, 1000},
	{768, 128, 384}, {768, 512, 128}, {768, 128, 512}, {128, 768, 512}, {384, 128, 768}, {128, 384, 768},
}

// TestSgemm: every shape and transpose combination agrees with a float64 product, with dense and
// padded strides.
func TestSgemm(t *testing.T) {
	if !Available() {
		t.Skip("no kernel here")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range shapes {
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				pad := 0
				if sh[0]*sh[1]*sh[2] < 1<<20 {
					pad = r.IntN(3) * 5
				}
				o := newOperands(r, tA, tB, sh[0], sh[1], sh[2], pad)
				o.check(t, o.run(t))
			}
		}
	}
}

// TestIndependentOfGOMAXPROCS: the product has the same bits at GOMAXPROCS 1, 2 and 5, for shapes
// large enough to run on several goroutines.
func TestIndependentOfGOMAXPROCS(t *testing.T) {
	if !Available() {
		t.Skip("no kernel here")
	}
	r := rand.New(rand.NewPCG(3, 4))
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, sh := range [][3]int{{97, 131, 513}, {301, 77, 259}, {13, 2100, 100}, {7, 70, 20000}, {9, 1100, 1000}, {768, 128, 384}, {128, 768, 512}} {
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				o := newOperands(r, tA, tB, sh[0], sh[1], sh[2], 1)
				var want []float32
				for _, procs := range []int{1, 2, 5} {
					runtime.GOMAXPROCS(procs)
					got := o.run(t)
					if want == nil {
						want = got
						continue
					}
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !math.IsNaN(float64(want[i])) {
							t.Fatalf("%v at GOMAXPROCS %d: C[%d] = %v, at 1 %v", o.shape(), procs, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestNoAllocations: in steady state a product allocates nothing, small or large, at one
// goroutine or two.
func TestNoAllocations(t *testing.T) {
	if !Available() {
		t.Skip("no kernel here")
	}
	if raceEnabled {
		t.Skip("allocation counts mean nothing under -race")
	}
	r := rand.New(rand.NewPCG(5, 6))
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, sh := range [][3]int{{20, 30, 40}, {768, 128, 384}, {128, 768, 512}} {
		o := newOperands(r, true, false, sh[0], sh[1], sh[2], 0)
		c := make([]float32, o.m*o.n)
		for _, procs := range []int{1, 2} {
			runtime.GOMAXPROCS(procs)
			allocs := testing.AllocsPerRun(5, func() {
				_ = Sgemm(o.transA, o.transB, o.m, o.n, o.k, o.a, o.lda, o.b, o.ldb, c, o.ldc)
			})
			if allocs != 0 {
				t.Errorf("%v at GOMAXPROCS %d: %v allocations per product", o.shape(), procs, allocs)
			}
		}
	}
}

// TestPackA6: the assembly packing of a six-row strip gives packA6Go's floats, for column counts
// with and without a tail of fewer than four.
func TestPackA6(t *testing.T) {
	if !Available() {
		t.Skip("no kernel here")
	}
	r := rand.New(rand.NewPCG(9, 10))
	for _, kb := range []int{1, 3, 4, 5, 8, 255, 256} {
		lda := kb + 3
		a := randomSlice(r, 5*lda+kb)
		got, want := make([]float32, 6*kb), make([]float32, 6*kb)
		packA6(kb, &a[0], lda, &got[0])
		packA6Go(kb, a, lda, want)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("kb %d: dst[%d] = %v, want %v", kb, i, got[i], want[i])
			}
		}
	}
}

// TestPackB16T: the assembly packing of a sixteen-column strip of a transposed B gives
// packB16TGo's floats, for row counts with and without a tail of fewer than four.
func TestPackB16T(t *testing.T) {
	if !Available() {
		t.Skip("no kernel here")
	}
	r := rand.New(rand.NewPCG(11, 12))
	for _, kb := range []int{1, 3, 4, 5, 8, 255, 256} {
		ldb := kb + 3
		b := randomSlice(r, 15*ldb+kb)
		got, want := make([]float32, 16*kb), make([]float32, 16*kb)
		packB16T(kb, &b[0], ldb, &got[0])
		packB16TGo(kb, b, ldb, want)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("kb %d: dst[%d] = %v, want %v", kb, i, got[i], want[i])
			}
		}
	}
}

// BenchmarkPack packs a 6 × 256 strip of a 784-column A and a 256 × 16 strip of a transposed
// B (16 runs 784 floats apart), in assembly and in Go.
func BenchmarkPack(b *testing.B) {
	if !Available() {
		b.Skip("no kernel here")
	}
	r := rand.New(rand.NewPCG(1, 1))
	a, bt, dst := randomSlice(r, 6*784), randomSlice(r, 16*784), make([]float32, 16*kc)
	b.Run("A6/asm", func(b *testing.B) {
		for b.Loop() {
			packA6(kc, &a[0], 784, &dst[0])
		}
	})
	b.Run("A6/go", func(b *testing.B) {
		for b.Loop() {
			packA6Go(kc, a, 784, dst)
		}
	})
	b.Run("B16T/asm", func(b *testing.B) {
		for b.Loop() {
			packB16T(kc, &bt[0], 784, &dst[0])
		}
	})
	b.Run("B16T/go", func(b *testing.B) {
		for b.Loop() {
			packB16TGo(kc, bt, 784, dst)
		}
	})
}

// TestBadShapes: strides shorter than their rows and slices shorter than their matrices are
// errors, not panics; C stays as it was.
func TestBadShapes(t *testing.T) {
	if !Available() {
		t.Skip("no kernel here")
	}
	a, b, c := make([]float32, 12), make([]float32, 12), make([]float32, 9)
	for _, tc := range []struct {
		name          string
		m, n, k       int
		lda, ldb, ldc int
		a, b, c       []float32
	}{
		{"short a", 3, 3, 5, 5, 3, 3, a, b, c},
		{"short c", 3, 4, 4, 4, 4, 4, a, b, c},
		{"lda < k", 3, 3, 4, 3, 3, 3, a, b, c},
		{"ldc < n", 3, 3, 4, 4, 3, 2, a, b, c},
		{"negative m", -1, 3, 4, 4, 3, 3, a, b, c},
		{"zero ldb", 1, 0, 1, 1, 0, 1, a, b, c},
	} {
		if err := Sgemm(false, false, tc.m, tc.n, tc.k, tc.a, tc.lda, tc.b, tc.ldb, tc.c, tc.ldc); err != ErrShape {
			t.Errorf("%s: err = %v, want ErrShape", tc.name, err)
		}
	}
	// k = 0 is an empty sum: C = 0.
	c[0] = 1
	if err := Sgemm(false, false, 3, 3, 0, nil, 1, nil, 3, c, 3); err != nil || c[0] != 0 {
		t.Errorf("k = 0: err %v, C[0] = %v", err, c[0])
	}
}

// FuzzSgemm: random shapes (up to 40 × 40 × 40, strides padded) and transposes agree with the
// float64 product.
func FuzzSgemm(f *testing.F) {
	if !Available() {
		f.Skip("no kernel here")
	}
	f.Add(uint8(7), uint8(17), uint8(9), uint8(0), uint8(3), uint64(1))
	f.Add(uint8(1), uint8(1), uint8(1), uint8(3), uint8(0), uint64(2))
	f.Fuzz(func(t *testing.T, m, n, k, flags, pad uint8, seed uint64) {
		r := rand.New(rand.NewPCG(seed, 0))
		o := newOperands(r, flags&1 != 0, flags&2 != 0, int(m%41), int(n%41), int(k%41), int(pad%4))
		o.check(t, o.run(t))
	})
}

// openblasNN is the system OpenBLAS's C = A·B when built with -tags openblas (openblas_bench_test.go).
var openblasNN func(m, n, k int, a, b, c []float32)

// BenchmarkSgemm times the GPT's products (and the MLP's first layer) on Sgemm, in each transpose
// case the GPT uses, and on vek's MatMul_Into (which takes A and B untransposed), in GFLOP/s.
func BenchmarkSgemm(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, sh := range [][3]int{{768, 128, 384}, {768, 384, 128}, {768, 512, 128}, {768, 128, 512}, {128, 768, 512}, {128, 384, 768}, {64, 64, 32}, {64, 256, 784}, {784, 256, 64}} {
		m, n, k := sh[0], sh[1], sh[2]
		flops := 2 * float64(m*n*k)
		a, bb, c := randomSlice(r, m*k), randomSlice(r, k*n), make([]float32, m*n)
		name := fmt.Sprintf("%dx%dx%d", m, n, k)
		if Available() {
			for _, tr := range []struct {
				name   string
				tA, tB bool
			}{{"NN", false, false}, {"TN", true, false}, {"NT", false, true}} {
				b.Run(name+"/gemm-"+tr.name, func(b *testing.B) {
					lda, ldb := k, n
					if tr.tA {
						lda = m
					}
					if tr.tB {
						ldb = k
					}
					for b.Loop() {
						_ = Sgemm(tr.tA, tr.tB, m, n, k, a, lda, bb, ldb, c, n)
					}
					b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
		b.Run(name+"/vek-NN", func(b *testing.B) {
			for b.Loop() {
				vek32.MatMul_Into(c, a, bb, k)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		if openblasNN != nil {
			b.Run(name+"/openblas-NN", func(b *testing.B) {
				for b.Loop() {
					openblasNN(m, n, k, a, bb, c)
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
