//go:build openblas

package nn

// Built with -tags openblas, gorgonia's matrix products run on the system OpenBLAS (Debian
// libopenblas-dev) through gonum's netlib cgo bindings instead of gonum's pure-Go BLAS.
//
// OpenBLAS itself is pinned to one thread: with two threads some products (the 784×256 weight
// gradient at batch 256) sum in a different order than with one, so the gradients of replicas would
// depend on their OPENBLAS_NUM_THREADS. The cores are used instead by panelBLAS, which cuts large
// products into panels of a size fixed by their shape and runs the panels concurrently: the same
// results on any number of cores. Pure Go and OpenBLAS results differ in the last bits, so every
// replica of a cohort must use the same build (compare BLAS).

// #cgo LDFLAGS: -lopenblas
// void openblas_set_num_threads(int);
import "C"

import (
	"gonum.org/v1/netlib/blas/netlib"
	G "gorgonia.org/gorgonia"
)

// BLAS names the BLAS implementation this binary uses.
const BLAS = "openblas-panels"

func init() {
	C.openblas_set_num_threads(1)
	G.Use(panelBLAS{netlib.Implementation{}})
}
