//go:build amd64 && !purego

#include "textflag.h"

// AdamW's element loop (adamwStep.runGo in optim.go), eight float32 at a time with AVX, operation
// for operation; the flushes to zero are masks. k points to the step's constants, each repeated 8
// times, 32 bytes apart, in the order of the adamwK* indices.

// func adamwAVX(params, grad, m, v *float32, n int, k *[adamwNK][8]float32)
TEXT ·adamwAVX(SB), NOSPLIT, $0-48
	MOVQ params+0(FP), DI
	MOVQ grad+8(FP), BX
	MOVQ m+16(FP), CX
	MOVQ v+24(FP), DX
	MOVQ n+32(FP), R9
	MOVQ k+40(FP), R8
	VMOVUPS 0(R8), Y15   // sign-clearing mask
	VMOVUPS 32(R8), Y14  // 1e-15
	VMOVUPS 64(R8), Y13  // 1e-30
	VMOVUPS 96(R8), Y12  // β1
	VMOVUPS 128(R8), Y11 // 1 − β1
	VMOVUPS 160(R8), Y10 // β2
	VMOVUPS 192(R8), Y9  // 1 − β2
	VMOVUPS 224(R8), Y8  // 1/(1 − β1ᵗ)
	VMOVUPS 256(R8), Y7  // 1/(1 − β2ᵗ)
	SHRQ $3, R9
	JZ   done

loop:
	VMOVUPS (BX), Y0             // g
	VANDPS  Y15, Y0, Y1          // |g|
	VCMPPS  $0x1d, Y14, Y1, Y2   // |g| ≥ 1e-15 (false for NaN)
	VANDPS  Y2, Y0, Y3           // g there, 0 elsewhere
	VMULPS  Y3, Y3, Y3           // g² (0 where |g| < 1e-15)
	VCMPPS  $0x11, Y13, Y1, Y2   // |g| < 1e-30 (false for NaN)
	VANDNPS Y0, Y2, Y0           // g = 0 there
	VMULPS  (CX), Y12, Y4        // β1·m
	VMULPS  Y0, Y11, Y5          // (1 − β1)·g
	VADDPS  Y5, Y4, Y4           // m'
	VANDPS  Y15, Y4, Y5          // |m'|
	VCMPPS  $0x11, Y13, Y5, Y5   // |m'| < 1e-30
	VANDNPS Y4, Y5, Y4           // m' = 0 there
	VMULPS  (DX), Y10, Y5        // β2·v
	VMULPS  Y3, Y9, Y6           // (1 − β2)·g²
	VADDPS  Y6, Y5, Y5           // v'
	VCMPPS  $0x11, Y13, Y5, Y6   // v' < 1e-30
	VANDNPS Y5, Y6, Y5           // v' = 0 there
	VMOVUPS Y4, (CX)
	VMOVUPS Y5, (DX)
	VMULPS  Y8, Y4, Y4           // m̂
	VMULPS  Y7, Y5, Y5           // v̂
	VSQRTPS Y5, Y5               // √v̂
	VADDPS  352(R8), Y5, Y5      // + ε
	VDIVPS  Y5, Y4, Y4           // m̂/(√v̂ + ε)
	VMOVUPS (DI), Y6             // θ
	VMULPS  320(R8), Y6, Y1      // wd·θ
	VADDPS  Y1, Y4, Y4           // m̂/(√v̂ + ε) + wd·θ
	VMULPS  288(R8), Y4, Y4      // lr·(…)
	VSUBPS  Y4, Y6, Y6           // θ − lr·(…)
	VMOVUPS Y6, (DI)
	ADDQ    $32, DI
	ADDQ    $32, BX
	ADDQ    $32, CX
	ADDQ    $32, DX
	DECQ    R9
	JNZ     loop

done:
	VZEROUPPER
	RET
