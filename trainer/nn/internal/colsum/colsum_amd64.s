//go:build amd64 && !purego

#include "textflag.h"

// The loops of colsum.go (AddGo, AddXhatGo), sixteen columns at a time: for each block of 16
// columns, four registers of four float64 sums run down the rows, each column's sum in row order.

// func addAVX(acc *float64, x *float32, rows, n16, stride int)
TEXT ·addAVX(SB), NOSPLIT, $0-40
	MOVQ acc+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ rows+16(FP), DX
	MOVQ n16+24(FP), CX
	MOVQ stride+32(FP), R9
	SHLQ $2, R9 // bytes per row

block:
	VMOVUPD 0(DI), Y0
	VMOVUPD 32(DI), Y1
	VMOVUPD 64(DI), Y2
	VMOVUPD 96(DI), Y3
	MOVQ    SI, R10
	MOVQ    DX, R11

row:
	VCVTPS2PD 0(R10), Y4 // columns 0–3 of the block, exactly in float64
	VADDPD    Y4, Y0, Y0
	VCVTPS2PD 16(R10), Y5
	VADDPD    Y5, Y1, Y1
	VCVTPS2PD 32(R10), Y6
	VADDPD    Y6, Y2, Y2
	VCVTPS2PD 48(R10), Y7
	VADDPD    Y7, Y3, Y3
	ADDQ      R9, R10
	DECQ      R11
	JNZ       row

	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VMOVUPD Y2, 64(DI)
	VMOVUPD Y3, 96(DI)
	ADDQ    $128, DI
	ADDQ    $64, SI
	DECQ    CX
	JNZ     block
	VZEROUPPER
	RET

// func addXhatAVX(acc *float64, x, dy, stats *float32, rows, n16, stride int)
TEXT ·addXhatAVX(SB), NOSPLIT, $0-56
	MOVQ acc+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ dy+16(FP), BX
	MOVQ stats+24(FP), R8
	MOVQ rows+32(FP), DX
	MOVQ n16+40(FP), CX
	MOVQ stride+48(FP), R9
	SHLQ $2, R9 // bytes per row

xblock:
	VMOVUPD 0(DI), Y0
	VMOVUPD 32(DI), Y1
	VMOVUPD 64(DI), Y2
	VMOVUPD 96(DI), Y3
	MOVQ    SI, R10
	MOVQ    BX, R12
	MOVQ    R8, R13
	MOVQ    DX, R11

xrow:
	VBROADCASTSS 0(R13), Y8 // mean
	VBROADCASTSS 4(R13), Y9 // inv
	VMOVUPS      0(R10), Y4
	VSUBPS       Y8, Y4, Y4 // x − mean
	VMULPS       Y9, Y4, Y4 // x̂ = (x − mean)·inv
	VMULPS       0(R12), Y4, Y4 // dy·x̂
	VMOVUPS      32(R10), Y5
	VSUBPS       Y8, Y5, Y5
	VMULPS       Y9, Y5, Y5
	VMULPS       32(R12), Y5, Y5
	VCVTPS2PD    X4, Y6
	VADDPD       Y6, Y0, Y0
	VEXTRACTF128 $1, Y4, X7
	VCVTPS2PD    X7, Y7
	VADDPD       Y7, Y1, Y1
	VCVTPS2PD    X5, Y6
	VADDPD       Y6, Y2, Y2
	VEXTRACTF128 $1, Y5, X7
	VCVTPS2PD    X7, Y7
	VADDPD       Y7, Y3, Y3
	ADDQ         R9, R10
	ADDQ         R9, R12
	ADDQ         $8, R13
	DECQ         R11
	JNZ          xrow

	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VMOVUPD Y2, 64(DI)
	VMOVUPD Y3, 96(DI)
	ADDQ    $128, DI
	ADDQ    $64, SI
	ADDQ    $64, BX
	DECQ    CX
	JNZ     xblock
	VZEROUPPER
	RET
