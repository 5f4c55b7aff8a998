package compress

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// refSign is q1 as FORMAT.md states it, one value at a time: the oracle for the byte-at-a-time
// appendSign.
func refSign(x []float32, B int) []byte {
	n := len(x)
	nb := (n + B - 1) / B
	out := make([]byte, 4*nb+(n+7)/8)
	scales, codes := out[:4*nb], out[4*nb:]
	for b := range nb {
		blk := x[b*B : min(n, (b+1)*B)]
		var sum float64
		for _, v := range blk {
			sum += math.Abs(float64(v))
		}
		binary.LittleEndian.PutUint32(scales[4*b:], math.Float32bits(float32(sum/float64(len(blk)))))
		for j, v := range blk {
			if v < 0 {
				codes[(b*B+j)/8] |= 1 << ((b*B + j) % 8)
			}
		}
	}
	return out
}

// TestSignMatchesReference: the fast q1 coder gives the reference bytes, and decoding gives ±scale
// with the coded sign, for every length around block and byte edges, with zeros and −0 mixed in.
func TestSignMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	negZero := math.Float32frombits(0x80000000)
	for _, B := range []int{8, 16, 64} {
		s := &Setting{Format: Q1, Block: B}
		for n := 0; n <= 3*B+9; n++ {
			x := make([]float32, n)
			for i := range x {
				switch rng.IntN(6) {
				case 0:
					x[i] = 0
				case 1:
					x[i] = negZero
				default:
					x[i] = float32(rng.NormFloat64())
				}
			}
			got, ok := appendSign(nil, x, s)
			if !ok {
				t.Fatalf("B=%d n=%d: refused finite input", B, n)
			}
			if want := refSign(x, B); !bytes.Equal(got, want) {
				t.Fatalf("B=%d n=%d: got % x, want % x", B, n, got, want)
			}
			dec := make([]float32, n)
			if err := decodeSign(dec, got, s); err != nil {
				t.Fatalf("B=%d n=%d: %v", B, n, err)
			}
			for i, v := range x {
				a := math.Float32frombits(binary.LittleEndian.Uint32(got[4*(i/B):]))
				want := a
				if v < 0 {
					want = -a
				}
				if math.Float32bits(dec[i]) != math.Float32bits(want) {
					t.Fatalf("B=%d n=%d value %d (%v): decoded %v, want %v", B, n, i, v, dec[i], want)
				}
			}
			if n > 0 {
				x[rng.IntN(n)] = float32(math.Inf(-1))
				if _, ok := appendSign(nil, x, s); ok {
					t.Fatalf("B=%d n=%d: accepted -Inf", B, n)
				}
			}
		}
	}
}
