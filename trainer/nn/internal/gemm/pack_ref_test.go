package gemm

// The packings' reference loops, which TestPackA6, TestPackB16T and BenchmarkPack hold the
// assembly against.

// packA6Go is packA6 in Go: dst[6q + i] = a[i·lda + q] for q < kb, i < 6.
func packA6Go(kb int, a []float32, lda int, dst []float32) {
	a0 := a[:kb]
	a1 := a[lda : lda+kb]
	a2 := a[2*lda : 2*lda+kb]
	a3 := a[3*lda : 3*lda+kb]
	a4 := a[4*lda : 4*lda+kb]
	a5 := a[5*lda : 5*lda+kb]
	for q := range a0 {
		dq := (*[mr]float32)(dst[q*mr:])
		dq[0], dq[1], dq[2], dq[3], dq[4], dq[5] = a0[q], a1[q], a2[q], a3[q], a4[q], a5[q]
	}
}

// packB16TGo is packB16T in Go: dst[16q + j] = b[j·ldb + q] for q < kb, j < 16.
func packB16TGo(kb int, b []float32, ldb int, dst []float32) {
	for j := range nr {
		for q, v := range b[j*ldb : j*ldb+kb] {
			dst[q*nr+j] = v
		}
	}
}
