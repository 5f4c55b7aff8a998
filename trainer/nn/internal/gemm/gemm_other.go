//go:build !amd64 || purego

package gemm

// useAsm is false: Sgemm returns ErrUnavailable.
var useAsm = false

func kernel(kc int, a *float32, lda int, b, c *float32, ldc int, add bool) {
	panic("gemm: kernel without AVX2 and FMA")
}

func packA6(kb int, a *float32, lda int, dst *float32) {
	panic("gemm: packA6 without AVX2")
}

func packB16T(kb int, b *float32, ldb int, dst *float32) {
	panic("gemm: packB16T without AVX2")
}
