//go:build amd64 && !purego

#include "textflag.h"

// func kernel(kc int, a *float32, lda int, b, c *float32, ldc int, add bool)
//
// The 6 × 16 micro-kernel. Y0–Y11 hold the tile: row i in Y(2i) (columns 0–7) and Y(2i+1)
// (columns 8–15). Each step q loads row q of the B strip into Y12, Y13, broadcasts the six
// elements of column q of the A strip (6 floats at a + q·lda) in turn into Y14 or Y15, and adds
// their products to the tile's rows with fused multiply-adds; so every element is one chain in q
// order.
TEXT ·kernel(SB), NOSPLIT, $0-49
	MOVQ    kc+0(FP), CX
	MOVQ    a+8(FP), SI
	MOVQ    lda+16(FP), R12
	MOVQ    b+24(FP), DX
	MOVQ    c+32(FP), DI
	MOVQ    ldc+40(FP), R8
	MOVBLZX add+48(FP), R9
	SHLQ    $2, R8  // bytes per row of C
	SHLQ    $2, R12 // bytes from one column of the A strip to the next

	// The tile starts at zero.
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

	// Two steps at a time while at least two are left.
	MOVQ CX, R10
	SHRQ $1, R10
	JZ   tail

loop2:
	// Step q: B row at 0(DX), A column at 0(SI).
	VMOVUPS      0(DX), Y12
	VMOVUPS      32(DX), Y13
	VBROADCASTSS 0(SI), Y14
	VFMADD231PS  Y12, Y14, Y0
	VFMADD231PS  Y13, Y14, Y1
	VBROADCASTSS 4(SI), Y15
	VFMADD231PS  Y12, Y15, Y2
	VFMADD231PS  Y13, Y15, Y3
	VBROADCASTSS 8(SI), Y14
	VFMADD231PS  Y12, Y14, Y4
	VFMADD231PS  Y13, Y14, Y5
	VBROADCASTSS 12(SI), Y15
	VFMADD231PS  Y12, Y15, Y6
	VFMADD231PS  Y13, Y15, Y7
	VBROADCASTSS 16(SI), Y14
	VFMADD231PS  Y12, Y14, Y8
	VFMADD231PS  Y13, Y14, Y9
	VBROADCASTSS 20(SI), Y15
	VFMADD231PS  Y12, Y15, Y10
	VFMADD231PS  Y13, Y15, Y11

	// Step q+1: B row at 64(DX), A column at 0(SI)(R12*1).
	VMOVUPS      64(DX), Y12
	VMOVUPS      96(DX), Y13
	VBROADCASTSS 0(SI)(R12*1), Y14
	VFMADD231PS  Y12, Y14, Y0
	VFMADD231PS  Y13, Y14, Y1
	VBROADCASTSS 4(SI)(R12*1), Y15
	VFMADD231PS  Y12, Y15, Y2
	VFMADD231PS  Y13, Y15, Y3
	VBROADCASTSS 8(SI)(R12*1), Y14
	VFMADD231PS  Y12, Y14, Y4
	VFMADD231PS  Y13, Y14, Y5
	VBROADCASTSS 12(SI)(R12*1), Y15
	VFMADD231PS  Y12, Y15, Y6
	VFMADD231PS  Y13, Y15, Y7
	VBROADCASTSS 16(SI)(R12*1), Y14
	VFMADD231PS  Y12, Y14, Y8
	VFMADD231PS  Y13, Y14, Y9
	VBROADCASTSS 20(SI)(R12*1), Y15
	VFMADD231PS  Y12, Y15, Y10
	VFMADD231PS  Y13, Y15, Y11

	LEAQ (SI)(R12*2), SI
	ADDQ $128, DX
	DECQ R10
	JNZ  loop2

tail:
	// The last step when kc is odd.
	TESTQ $1, CX
	JZ    out
	VMOVUPS      0(DX), Y12
	VMOVUPS      32(DX), Y13
	VBROADCASTSS 0(SI), Y14
	VFMADD231PS  Y12, Y14, Y0
	VFMADD231PS  Y13, Y14, Y1
	VBROADCASTSS 4(SI), Y15
	VFMADD231PS  Y12, Y15, Y2
	VFMADD231PS  Y13, Y15, Y3
	VBROADCASTSS 8(SI), Y14
	VFMADD231PS  Y12, Y14, Y4
	VFMADD231PS  Y13, Y14, Y5
	VBROADCASTSS 12(SI), Y15
	VFMADD231PS  Y12, Y15, Y6
	VFMADD231PS  Y13, Y15, Y7
	VBROADCASTSS 16(SI), Y14
	VFMADD231PS  Y12, Y14, Y8
	VFMADD231PS  Y13, Y14, Y9
	VBROADCASTSS 20(SI), Y15
	VFMADD231PS  Y12, Y15, Y10
	VFMADD231PS  Y13, Y15, Y11

out:
	// Rows 0–2 of C at DI, DI+R8, DI+2·R8; rows 3–5 at R11 = DI+3·R8 onwards.
	LEAQ  (DI)(R8*2), R11
	ADDQ  R8, R11
	TESTQ R9, R9
	JZ    store

	// add: the tile plus what C holds.
	VADDPS 0(DI), Y0, Y0
	VADDPS 32(DI), Y1, Y1
	VADDPS 0(DI)(R8*1), Y2, Y2
	VADDPS 32(DI)(R8*1), Y3, Y3
	VADDPS 0(DI)(R8*2), Y4, Y4
	VADDPS 32(DI)(R8*2), Y5, Y5
	VADDPS 0(R11), Y6, Y6
	VADDPS 32(R11), Y7, Y7
	VADDPS 0(R11)(R8*1), Y8, Y8
	VADDPS 32(R11)(R8*1), Y9, Y9
	VADDPS 0(R11)(R8*2), Y10, Y10
	VADDPS 32(R11)(R8*2), Y11, Y11

store:
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 0(DI)(R8*1)
	VMOVUPS Y3, 32(DI)(R8*1)
	VMOVUPS Y4, 0(DI)(R8*2)
	VMOVUPS Y5, 32(DI)(R8*2)
	VMOVUPS Y6, 0(R11)
	VMOVUPS Y7, 32(R11)
	VMOVUPS Y8, 0(R11)(R8*1)
	VMOVUPS Y9, 32(R11)(R8*1)
	VMOVUPS Y10, 0(R11)(R8*2)
	VMOVUPS Y11, 32(R11)(R8*2)
	VZEROUPPER
	RET

// func packA6(kb int, a *float32, lda int, dst *float32)
//
// Packs a whole strip of six rows of an untransposed A: dst[6q + i] = a[i·lda + q] for q < kb,
// i < 6. Four columns at a time: the four floats of rows 0–3 are transposed 4 × 4 in X10–X13
// (one column each) and those of rows 4–5 interleaved in X14, X15 (two columns each), then
// each column's six floats are stored one after another.
TEXT ·packA6(SB), NOSPLIT, $0-32
	MOVQ kb+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	MOVQ dst+24(FP), DI
	SHLQ $2, R8              // bytes per row of A
	LEAQ (SI)(R8*2), R9
	ADDQ R8, R9              // R9: row 3
	MOVQ CX, R10
	SHRQ $2, R10             // groups of four columns
	JZ   packtail

pack4:
	// Rows 0–5, columns q … q+3: a, b, c, d, e, f.
	VMOVUPS (SI), X0
	VMOVUPS (SI)(R8*1), X1
	VMOVUPS (SI)(R8*2), X2
	VMOVUPS (R9), X3
	VMOVUPS (R9)(R8*1), X4
	VMOVUPS (R9)(R8*2), X5

	// Transpose a, b, c, d: X10 = a0 b0 c0 d0, X11 = a1 b1 c1 d1, X12 = …2, X13 = …3.
	VUNPCKLPS X1, X0, X6     // a0 b0 a1 b1
	VUNPCKHPS X1, X0, X7     // a2 b2 a3 b3
	VUNPCKLPS X3, X2, X8     // c0 d0 c1 d1
	VUNPCKHPS X3, X2, X9     // c2 d2 c3 d3
	VMOVLHPS  X8, X6, X10    // a0 b0 c0 d0
	VMOVHLPS  X6, X8, X11    // a1 b1 c1 d1
	VMOVLHPS  X9, X7, X12    // a2 b2 c2 d2
	VMOVHLPS  X7, X9, X13    // a3 b3 c3 d3

	// Interleave e, f: X14 = e0 f0 e1 f1, X15 = e2 f2 e3 f3.
	VUNPCKLPS X5, X4, X14
	VUNPCKHPS X5, X4, X15

	// Column q+j at dst + 24j: four floats of rows 0–3, then two of rows 4–5.
	VMOVUPS X10, 0(DI)
	VMOVQ   X14, 16(DI)
	VMOVUPS X11, 24(DI)
	VMOVHPS X14, 40(DI)
	VMOVUPS X12, 48(DI)
	VMOVQ   X15, 64(DI)
	VMOVUPS X13, 72(DI)
	VMOVHPS X15, 88(DI)

	ADDQ $16, SI
	ADDQ $16, R9
	ADDQ $96, DI
	DECQ R10
	JNZ  pack4

packtail:
	// The last kb mod 4 columns, one float at a time.
	ANDQ $3, CX
	JZ   packdone

pack1:
	VMOVSS (SI), X0
	VMOVSS X0, 0(DI)
	VMOVSS (SI)(R8*1), X1
	VMOVSS X1, 4(DI)
	VMOVSS (SI)(R8*2), X2
	VMOVSS X2, 8(DI)
	VMOVSS (R9), X3
	VMOVSS X3, 12(DI)
	VMOVSS (R9)(R8*1), X4
	VMOVSS X4, 16(DI)
	VMOVSS (R9)(R8*2), X5
	VMOVSS X5, 20(DI)
	ADDQ   $4, SI
	ADDQ   $4, R9
	ADDQ   $24, DI
	DECQ   CX
	JNZ    pack1

packdone:
	RET

// func packB16T(kb int, b *float32, ldb int, dst *float32)
//
// Packs a whole sixteen-column strip of a transposed B: dst[16q + j] = b[j·ldb + q] for q < kb,
// j < 16. Four rows q at a time: for each four runs of b, their four floats are transposed 4 × 4
// (as in packA6) into X10–X13, one row of the strip's four columns each.
TEXT ·packB16T(SB), NOSPLIT, $0-32
	MOVQ kb+0(FP), CX
	MOVQ b+8(FP), SI
	MOVQ ldb+16(FP), R8
	MOVQ dst+24(FP), DI
	SHLQ $2, R8              // bytes per run of b
	MOVQ CX, R10
	SHRQ $2, R10             // groups of four rows
	JZ   btail

b4:
	MOVQ SI, AX

	// Columns 0–3 of the strip: runs 0–3 of b, transposed into rows q … q+3.
	VMOVUPS   (AX), X0
	VMOVUPS   (AX)(R8*1), X1
	VMOVUPS   (AX)(R8*2), X2
	LEAQ      (AX)(R8*2), BX
	VMOVUPS   (BX)(R8*1), X3
	VUNPCKLPS X1, X0, X6
	VUNPCKHPS X1, X0, X7
	VUNPCKLPS X3, X2, X8
	VUNPCKHPS X3, X2, X9
	VMOVLHPS  X8, X6, X10
	VMOVHLPS  X6, X8, X11
	VMOVLHPS  X9, X7, X12
	VMOVHLPS  X7, X9, X13
	VMOVUPS   X10, 0(DI)
	VMOVUPS   X11, 64(DI)
	VMOVUPS   X12, 128(DI)
	VMOVUPS   X13, 192(DI)
	LEAQ      (AX)(R8*4), AX

	// Columns 4–7 of the strip: runs 4–7 of b, transposed into rows q … q+3.
	VMOVUPS   (AX), X0
	VMOVUPS   (AX)(R8*1), X1
	VMOVUPS   (AX)(R8*2), X2
	LEAQ      (AX)(R8*2), BX
	VMOVUPS   (BX)(R8*1), X3
	VUNPCKLPS X1, X0, X6
	VUNPCKHPS X1, X0, X7
	VUNPCKLPS X3, X2, X8
	VUNPCKHPS X3, X2, X9
	VMOVLHPS  X8, X6, X10
	VMOVHLPS  X6, X8, X11
	VMOVLHPS  X9, X7, X12
	VMOVHLPS  X7, X9, X13
	VMOVUPS   X10, 16(DI)
	VMOVUPS   X11, 80(DI)
	VMOVUPS   X12, 144(DI)
	VMOVUPS   X13, 208(DI)
	LEAQ      (AX)(R8*4), AX

	// Columns 8–11 of the strip: runs 8–11 of b, transposed into rows q … q+3.
	VMOVUPS   (AX), X0
	VMOVUPS   (AX)(R8*1), X1
	VMOVUPS   (AX)(R8*2), X2
	LEAQ      (AX)(R8*2), BX
	VMOVUPS   (BX)(R8*1), X3
	VUNPCKLPS X1, X0, X6
	VUNPCKHPS X1, X0, X7
	VUNPCKLPS X3, X2, X8
	VUNPCKHPS X3, X2, X9
	VMOVLHPS  X8, X6, X10
	VMOVHLPS  X6, X8, X11
	VMOVLHPS  X9, X7, X12
	VMOVHLPS  X7, X9, X13
	VMOVUPS   X10, 32(DI)
	VMOVUPS   X11, 96(DI)
	VMOVUPS   X12, 160(DI)
	VMOVUPS   X13, 224(DI)
	LEAQ      (AX)(R8*4), AX

	// Columns 12–15 of the strip: runs 12–15 of b, transposed into rows q … q+3.
	VMOVUPS   (AX), X0
	VMOVUPS   (AX)(R8*1), X1
	VMOVUPS   (AX)(R8*2), X2
	LEAQ      (AX)(R8*2), BX
	VMOVUPS   (BX)(R8*1), X3
	VUNPCKLPS X1, X0, X6
	VUNPCKHPS X1, X0, X7
	VUNPCKLPS X3, X2, X8
	VUNPCKHPS X3, X2, X9
	VMOVLHPS  X8, X6, X10
	VMOVHLPS  X6, X8, X11
	VMOVLHPS  X9, X7, X12
	VMOVHLPS  X7, X9, X13
	VMOVUPS   X10, 48(DI)
	VMOVUPS   X11, 112(DI)
	VMOVUPS   X12, 176(DI)
	VMOVUPS   X13, 240(DI)

	ADDQ $16, SI
	ADDQ $256, DI
	DECQ R10
	JNZ  b4

btail:
	// The last kb mod 4 rows, one float at a time: row q's sixteen floats from the sixteen runs.
	ANDQ $3, CX
	JZ   bdone

b1:
	MOVQ SI, AX
	MOVQ $16, R11

b1col:
	VMOVSS (AX), X0
	VMOVSS X0, (DI)
	ADDQ   R8, AX
	ADDQ   $4, DI
	DECQ   R11
	JNZ    b1col
	ADDQ   $4, SI
	DECQ   CX
	JNZ    b1

bdone:
	RET
