//go:build !amd64 || purego

package trainer

// adamwAsm is false: AdamW's element loop runs in Go.
var adamwAsm = false

func adamwAVX(params, grad, m, v *float32, n int, k *[adamwNK][8]float32) {
	panic("trainer: adamwAVX without AVX")
}
