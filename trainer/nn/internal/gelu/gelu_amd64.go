//go:build amd64 && !purego

package gelu

import "golang.org/x/sys/cpu"

// useAsm says whether the loops run on the AVX loops of gelu_amd64.s.
var useAsm = cpu.X86.HasAVX

// forwardAVX is ForwardGo over n elements, n a multiple of 8; th may be nil.
//
//go:noescape
func forwardAVX(out, th, x *float32, n int, k *[nk][8]float32)

// backwardAVX is BackwardGo over n elements, n a multiple of 8.
//
//go:noescape
func backwardAVX(out, x, th, dy *float32, n int, k *[nk][8]float32)
