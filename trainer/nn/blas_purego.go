//go:build !openblas

package nn

// BLAS names the BLAS implementation this binary uses: gonum's pure-Go BLAS unless built with
// -tags openblas ("openblas-panels"). Replicas whose BLAS differ do not compute bit-identical
// gradients.
const BLAS = "gonum"
