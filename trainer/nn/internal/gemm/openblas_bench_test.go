//go:build openblasbench

package gemm

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/netlib/blas/netlib"
)

// Built with -tags openblasbench, BenchmarkSgemm also times the system OpenBLAS through gonum's
// netlib bindings, which name no library: link it and pin it to one thread from the environment,
//
//	CGO_LDFLAGS=-lopenblas OPENBLAS_NUM_THREADS=1 go test -tags openblasbench -run '^$' -bench Sgemm
//
// (a tag of its own: the tree's -tags openblas test run links no library for this package).
func init() {
	openblasNN = func(m, n, k int, a, b, c []float32) {
		netlib.Implementation{}.Sgemm(blas.NoTrans, blas.NoTrans, m, n, k, 1, a, k, b, n, 0, c, n)
	}
}
