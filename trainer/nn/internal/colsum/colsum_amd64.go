//go:build amd64 && !purego

package colsum

import "golang.org/x/sys/cpu"

// useAsm says whether the sums run on the AVX2 loops of colsum_amd64.s.
var useAsm = cpu.X86.HasAVX2

// addAVX is AddGo over the first 16·n16 columns.
//
//go:noescape
func addAVX(acc *float64, x *float32, rows, n16, stride int)

// addXhatAVX is AddXhatGo over the first 16·n16 columns.
//
//go:noescape
func addXhatAVX(acc *float64, x, dy, stats *float32, rows, n16, stride int)
