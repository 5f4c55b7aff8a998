//go:build openblas

package nn

// Built with -tags openblas, gorgonia's matrix products run on the system OpenBLAS (Debian
// libopenblas-dev) through gonum's netlib cgo bindings instead of gonum's pure-Go BLAS. Threads are
// set with OPENBLAS_NUM_THREADS. Pure Go and OpenBLAS results differ in the last bits, so every
// replica of a cohort must use the same build.

// #cgo LDFLAGS: -lopenblas
import "C"

import (
	"gonum.org/v1/netlib/blas/netlib"
	G "gorgonia.org/gorgonia"
)

// BLAS names the BLAS implementation this binary uses.
const BLAS = "openblas"

func init() { G.Use(netlib.Implementation{}) }
