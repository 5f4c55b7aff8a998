//go:build !amd64 || purego

package gelu

// useAsm is false: the Go loops run.
var useAsm = false

func forwardAVX(out, th, x *float32, n int, k *[nk][8]float32) {
	panic("gelu: forwardAVX without AVX")
}

func backwardAVX(out, x, th, dy *float32, n int, k *[nk][8]float32) {
	panic("gelu: backwardAVX without AVX")
}
