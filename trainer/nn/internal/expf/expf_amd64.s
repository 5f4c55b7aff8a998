//go:build amd64 && !purego

#include "textflag.h"

// Shifted's loop (expf.go: ShiftedGo, Exp), eight float32 at a time with AVX2, operation for
// operation; Exp's branches are masks. k points to vec: each constant repeated 8 times, 32 bytes
// apart, in the order of the k* indices.

#define KHI 0(R8)
#define KLO 32(R8)
#define KLOG2E 64(R8)
#define KSIGN 96(R8)
#define KHALF 128(R8)
#define KC1 160(R8)
#define KC2 192(R8)
#define KP0 224(R8)
#define KP1 256(R8)
#define KP2 288(R8)
#define KP3 320(R8)
#define KP4 352(R8)
#define KP5 384(R8)
#define KONE 416(R8)
#define K127 448(R8)
#define KBIAS 480(R8)
#define KINF 512(R8)

// func shiftedAVX(out, x *float32, n int, shift, scale float32, k *[nk][8]float32)
TEXT ·shiftedAVX(SB), NOSPLIT, $0-40
	MOVQ         out+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS shift+24(FP), Y15
	VBROADCASTSS scale+28(FP), Y14
	MOVQ         k+32(FP), R8
	SHRQ         $3, CX
	JZ           done

loop:
	VMOVUPS (SI), Y0
	VSUBPS  Y15, Y0, Y0      // v − shift
	VMULPS  Y0, Y14, Y0      // x = scale·(v − shift)
	VMULPS  KLOG2E, Y0, Y1   // t = log2e·x
	VANDPS  KSIGN, Y1, Y2    // t's sign
	VORPS   KHALF, Y2, Y2    // ±0.5 (−0.5 for t < 0; for t = −0 too, where n is 0 either way)
	VADDPS  Y2, Y1, Y1       // t ± 0.5
	VCVTTPS2DQ Y1, Y1        // ni = int32(t), truncated
	VCVTDQ2PS  Y1, Y2        // n = float32(ni)
	VMULPS  KC1, Y2, Y3      // n·c1
	VSUBPS  Y3, Y0, Y3       // x − n·c1
	VMULPS  KC2, Y2, Y4      // n·c2
	VSUBPS  Y4, Y3, Y3       // r = x − n·c1 − n·c2
	VMULPS  KP0, Y3, Y4      // p = p0·r
	VADDPS  KP1, Y4, Y4      // + p1
	VMULPS  Y3, Y4, Y4
	VADDPS  KP2, Y4, Y4      // + p2
	VMULPS  Y3, Y4, Y4
	VADDPS  KP3, Y4, Y4      // + p3
	VMULPS  Y3, Y4, Y4
	VADDPS  KP4, Y4, Y4      // + p4
	VMULPS  Y3, Y4, Y4
	VADDPS  KP5, Y4, Y4      // + p5
	VMULPS  Y3, Y4, Y4       // p·r
	VMULPS  Y3, Y4, Y4       // p·r·r
	VADDPS  Y3, Y4, Y4       // + r
	VADDPS  KONE, Y4, Y4     // y = … + 1
	VCMPPS  $0x1e, K127, Y2, Y5 // big = n > 127 (GT_OQ)
	VADDPS  Y4, Y4, Y6       // y·2 (exact, as y*2)
	VBLENDVPS Y5, Y6, Y4, Y4 // y = big ? y·2 : y
	VPADDD  Y5, Y1, Y1       // ni − 1 where big (the mask is −1 there)
	VPADDD  KBIAS, Y1, Y1    // + 127
	VPSLLD  $23, Y1, Y1      // 2^ni (or 2^(ni−1))
	VMULPS  Y1, Y4, Y4       // y·2^ni
	VCMPPS  $0x1e, KHI, Y0, Y5  // x > hi (GT_OQ: false for NaN)
	VBLENDVPS Y5, KINF, Y4, Y4  // +Inf there
	VCMPPS  $0x11, KLO, Y0, Y5  // x < lo (LT_OQ)
	VANDNPS Y4, Y5, Y4          // 0 there
	VCMPPS  $3, Y0, Y0, Y5      // x is NaN (UNORD_Q)
	VBLENDVPS Y5, Y0, Y4, Y4    // x there
	VMOVUPS Y4, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     loop

done:
	VZEROUPPER
	RET
