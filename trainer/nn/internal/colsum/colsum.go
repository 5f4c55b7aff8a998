// Package colsum holds the column sums of package nn's gradient kernels (the bias gradients and
// LayerNorm's gain gradient): each column summed in float64, row after row.
//
// On amd64 with AVX2 the sums run sixteen columns at a time (colsum_amd64.s), four float64 chains
// per register, each column's chain still in row order and each term computed by the Go loop's
// float32 operations, so both give the same bits on every machine (TestAsmMatchesGo). It lives in
// a package of its own because package nn uses cgo (OpenBLAS), and a cgo package cannot hold Go
// assembly.
package colsum

// Add adds column c of the rows × stride matrix x to acc[c], for every c < len(acc), row after
// row: acc[c] += float64(x[r·stride + c]) for r = 0, 1, …, rows−1.
func Add(acc []float64, x []float32, rows, stride int) {
	if rows <= 0 || len(acc) == 0 {
		return
	}
	_ = x[(rows-1)*stride+len(acc)-1]
	n16 := 0
	if useAsm {
		n16 = len(acc) / 16
		if n16 > 0 {
			addAVX(&acc[0], &x[0], rows, n16, stride)
		}
	}
	AddGo(acc[16*n16:], x[16*n16:], rows, stride)
}

// AddGo is Add's loop in Go.
func AddGo(acc []float64, x []float32, rows, stride int) {
	for r := 0; r < rows; r++ {
		row := x[r*stride : r*stride+len(acc)]
		for c, v := range row {
			acc[c] += float64(v)
		}
	}
}

// AddXhat adds column c of dy ⊙ x̂ to acc[c] for every c < len(acc), row after row, where x̂ is
// LayerNorm's normalised input, (x − mean)·inv with row r's mean and inv at stats[2r] and
// stats[2r+1]: acc[c] += float64(dy[r·stride + c]·((x[r·stride + c] − mean)·inv)).
func AddXhat(acc []float64, x, dy, stats []float32, rows, stride int) {
	if rows <= 0 || len(acc) == 0 {
		return
	}
	_ = x[(rows-1)*stride+len(acc)-1]
	_ = dy[(rows-1)*stride+len(acc)-1]
	_ = stats[2*rows-1]
	n16 := 0
	if useAsm {
		n16 = len(acc) / 16
		if n16 > 0 {
			addXhatAVX(&acc[0], &x[0], &dy[0], &stats[0], rows, n16, stride)
		}
	}
	AddXhatGo(acc[16*n16:], x[16*n16:], dy[16*n16:], stats, rows, stride)
}

// AddXhatGo is AddXhat's loop in Go.
func AddXhatGo(acc []float64, x, dy, stats []float32, rows, stride int) {
	for r := 0; r < rows; r++ {
		mean, inv := stats[2*r], stats[2*r+1]
		xr, dr := x[r*stride:r*stride+len(acc)], dy[r*stride:r*stride+len(acc)]
		for c, v := range dr {
			acc[c] += float64(v * ((xr[c] - mean) * inv))
		}
	}
}
