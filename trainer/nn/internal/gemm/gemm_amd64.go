//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

// useAsm says whether the micro-kernel of gemm_amd64.s runs here.
var useAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kernel computes the 6 × 16 product of an A strip (kc columns of 6 floats, column q at
// a + q·lda: lda is 6 in a packed strip, the row stride of a transposed A read in place) and a
// packed B strip (kc rows of 16 floats at b), each element a chain of fused multiply-adds in k
// order, and stores it into the tile of C at c (row stride ldc floats), or adds it to the tile
// when add.
//
//go:noescape
func kernel(kc int, a *float32, lda int, b, c *float32, ldc int, add bool)

// packA6 packs a whole six-row strip of an untransposed A, kb columns from a (row stride lda
// floats), into dst: dst[6q + i] = a[i·lda + q].
//
//go:noescape
func packA6(kb int, a *float32, lda int, dst *float32)

// packB16T packs a whole sixteen-column strip of a transposed B, kb rows from b (stride ldb
// floats between the strip's columns), into dst: dst[16q + j] = b[j·ldb + q].
//
//go:noescape
func packB16T(kb int, b *float32, ldb int, dst *float32)
