//go:build !amd64 || purego

package colsum

// useAsm is false: the Go loops run.
var useAsm = false

func addAVX(acc *float64, x *float32, rows, n16, stride int) {
	panic("colsum: addAVX without AVX2")
}

func addXhatAVX(acc *float64, x, dy, stats *float32, rows, n16, stride int) {
	panic("colsum: addXhatAVX without AVX2")
}
