//go:build amd64 && !purego

#include "textflag.h"

// The loops of gelu.go (ForwardGo, BackwardGo), eight float32 at a time with AVX, operation for
// operation. k points to vec: each constant repeated 8 times, 32 bytes apart, in the order of the
// k* indices.

// func forwardAVX(out, th, x *float32, n int, k *[nk][8]float32)
TEXT ·forwardAVX(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), DI
	MOVQ th+8(FP), DX
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	MOVQ k+32(FP), R8
	VMOVUPS 0(R8), Y15   // a
	VMOVUPS 32(R8), Y14  // c
	VMOVUPS 64(R8), Y13  // Clamp
	VMOVUPS 96(R8), Y12  // −Clamp
	VMOVUPS 128(R8), Y11 // 0.5
	VMOVUPS 160(R8), Y10 // 1
	SHRQ $3, CX
	JZ   fdone

floop:
	VMOVUPS (SI), Y0      // v
	VMULPS  Y0, Y15, Y1   // a·v
	VMULPS  Y0, Y1, Y1    // ·v
	VMULPS  Y0, Y1, Y1    // ·v
	VADDPS  Y1, Y0, Y1    // v + a·v·v·v
	VMULPS  Y1, Y14, Y1   // u = c·(…)
	VMINPS  Y1, Y13, Y1   // u = clamp < u ? clamp : u (NaN stays)
	VMAXPS  Y1, Y12, Y1   // u = −clamp > u ? −clamp : u
	VMULPS  Y1, Y1, Y2    // x2 = u·u
	VMULPS  192(R8), Y2, Y3 // p = P13·x2
	VADDPS  224(R8), Y3, Y3 // + P11
	VMULPS  Y2, Y3, Y3
	VADDPS  256(R8), Y3, Y3 // + P9
	VMULPS  Y2, Y3, Y3
	VADDPS  288(R8), Y3, Y3 // + P7
	VMULPS  Y2, Y3, Y3
	VADDPS  320(R8), Y3, Y3 // + P5
	VMULPS  Y2, Y3, Y3
	VADDPS  352(R8), Y3, Y3 // + P3
	VMULPS  Y2, Y3, Y3
	VADDPS  384(R8), Y3, Y3 // + P1
	VMULPS  416(R8), Y2, Y4 // q = Q6·x2
	VADDPS  448(R8), Y4, Y4 // + Q4
	VMULPS  Y2, Y4, Y4
	VADDPS  480(R8), Y4, Y4 // + Q2
	VMULPS  Y2, Y4, Y4
	VADDPS  512(R8), Y4, Y4 // + Q0
	VMULPS  Y3, Y1, Y3      // u·p
	VDIVPS  Y4, Y3, Y3      // t = u·p/q
	TESTQ   DX, DX
	JZ      fnokeep
	VMOVUPS Y3, (DX)
	ADDQ    $32, DX

fnokeep:
	VADDPS  Y10, Y3, Y5   // 1 + t
	VMULPS  Y11, Y0, Y6   // 0.5·v
	VMULPS  Y5, Y6, Y6    // 0.5·v·(1 + t)
	VMOVUPS Y6, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     floop

fdone:
	VZEROUPPER
	RET

// func backwardAVX(out, x, th, dy *float32, n int, k *[nk][8]float32)
TEXT ·backwardAVX(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ th+16(FP), DX
	MOVQ dy+24(FP), BX
	MOVQ n+32(FP), CX
	MOVQ k+40(FP), R8
	VMOVUPS 32(R8), Y15  // c
	VMOVUPS 544(R8), Y14 // 3·a
	VMOVUPS 128(R8), Y11 // 0.5
	VMOVUPS 160(R8), Y10 // 1
	SHRQ $3, CX
	JZ   bdone

bloop:
	VMOVUPS (SI), Y0      // v
	VMOVUPS (DX), Y1      // t
	VMULPS  Y0, Y14, Y3   // 3·a·v
	VMULPS  Y0, Y3, Y3    // ·v
	VADDPS  Y3, Y10, Y3   // 1 + …
	VMULPS  Y3, Y15, Y3   // du = c·(…)
	VADDPS  Y1, Y10, Y4   // 1 + t
	VMULPS  Y4, Y11, Y4   // 0.5·(1 + t)
	VMULPS  Y1, Y1, Y5    // t·t
	VSUBPS  Y5, Y10, Y5   // 1 − t·t
	VMULPS  Y0, Y11, Y6   // 0.5·v
	VMULPS  Y5, Y6, Y6    // ·(1 − t·t)
	VMULPS  Y3, Y6, Y6    // ·du
	VADDPS  Y6, Y4, Y4    // 0.5·(1 + t) + …
	VMULPS  (BX), Y4, Y4  // dy·(…)
	VMOVUPS Y4, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	ADDQ    $32, BX
	ADDQ    $32, DI
	DECQ    CX
	JNZ     bloop

bdone:
	VZEROUPPER
	RET
