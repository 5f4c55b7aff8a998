//go:build !amd64 || purego

package expf

// useAsm is false: the Go loop runs.
var useAsm = false

func shiftedAVX(out, x *float32, n int, shift, scale float32, k *[nk][8]float32) {
	panic("expf: shiftedAVX without AVX2")
}
