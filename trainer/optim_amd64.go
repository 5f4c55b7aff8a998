//go:build amd64 && !purego

package trainer

import "golang.org/x/sys/cpu"

// adamwAsm says whether AdamW's element loop runs on the AVX loop of optim_amd64.s: eight
// elements at a time, adamwStep.runGo's operations in the same order, without fused multiply-adds,
// its flushes as masks. IEEE 754 rounds each operation (multiplication, addition, subtraction,
// division, square root) exactly whatever the vector width, so the bits are runGo's
// (TestAdamWMatchesReferenceLoop).
var adamwAsm = cpu.X86.HasAVX

// adamwAVX is adamwStep.runGo over n elements, n a multiple of 8, with the step's constants in k
// (adamwConsts).
//
//go:noescape
func adamwAVX(params, grad, m, v *float32, n int, k *[adamwNK][8]float32)
