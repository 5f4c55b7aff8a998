//go:build !openblas

package nn

// BLAS names the BLAS implementation this binary uses: gonum's pure-Go BLAS unless built with
// -tags openblas.
const BLAS = "gonum"
