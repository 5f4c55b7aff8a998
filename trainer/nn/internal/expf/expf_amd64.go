//go:build amd64 && !purego

package expf

import "golang.org/x/sys/cpu"

// useAsm says whether Shifted runs on the AVX2 loop of expf_amd64.s.
var useAsm = cpu.X86.HasAVX2

// shiftedAVX is ShiftedGo over n elements, n a multiple of 8.
//
//go:noescape
func shiftedAVX(out, x *float32, n int, shift, scale float32, k *[nk][8]float32)
