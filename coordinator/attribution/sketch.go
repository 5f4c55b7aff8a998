package attribution

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
)

// The updates' pairwise products — for the duplicate groups, the only use of ⟨Δ_i, Δ_j⟩ beyond
// the norms — cost P(P+1)/2 dot products of a slice's length when exact. Beyond ExactGramMax
// participants each aggregator sends, instead, a count sketch of every update: coordinate j of
// the parameter vector goes, with a sign, to one of Dims buckets, both drawn from a hash of
// (Seed, j). The hash uses the global index j, so the sketches of a vector's slices add up to the
// sketch of the vector, and the leader adds them like the other sums. cos(SΔ_i, SΔ_j) estimates
// cos(Δ_i, Δ_j) with a spread of about (1 − cos²)/√Dims: ±0.003 for a copy at 0.97, ±0.04 for
// honest updates at 0.6, which keeps the duplicate threshold (DupCosine, 0.95) many spreads away
// from both. An update and any positive multiple of it have the same sketch direction: cosine 1.
//
// The seed is drawn from the round's seed and θ_{t+1}'s hash, which no participant knows when it
// uploads: an update cannot be shaped to dodge the buckets (adding a little mass to the
// coordinates of one bucket, all of one sign, moves the sketch far more than the update).
//
// Every step is additions of exact values (a float32 with its sign flipped, in float64) in index
// order and sums in slice order: the same updates give the same bits on every aggregator, on any
// CPU, on a re-run.
const (
	// ExactGramMax is the most participants a round may have for the exact Gram matrix.
	ExactGramMax = 64
	// SketchDims is the dimension of a sketched update (SketchFor).
	SketchDims = 256
	// MaxSketchDims bounds Sketch.Dims on the wire.
	MaxSketchDims = 1024
	minSketchDims = 8
)

// Sketch says how a Partial carries the updates' pairwise products: Dims == 0 for the exact
// Gram matrix, else count sketches of Dims (a power of two) buckets hashed with Seed.
type Sketch struct {
	Dims int
	Seed uint64
}

// SketchFor is the Sketch of a round with the given number of participants, seed and new model
// hash (consensus.Round's Participants, Seed and NewModelHash: every coordinator holding the
// closed round chooses the same): exact up to ExactGramMax participants, else SketchDims buckets.
func SketchFor(participants int, roundSeed uint64, newModelHash []byte) Sketch {
	if participants <= ExactGramMax {
		return Sketch{}
	}
	h := sha256.New()
	h.Write([]byte("cohort/attribution sketch v1\x00"))
	h.Write(binary.LittleEndian.AppendUint64(nil, roundSeed))
	h.Write(newModelHash)
	return Sketch{Dims: SketchDims, Seed: binary.LittleEndian.Uint64(h.Sum(nil))}
}

func (sk Sketch) String() string {
	if sk.Dims == 0 {
		return "exact"
	}
	return fmt.Sprintf("sketch(%d, %#x)", sk.Dims, sk.Seed)
}

// check validates sk for a partial of P members.
func (sk Sketch) check(P int) error {
	switch {
	case sk.Dims == 0 && sk.Seed != 0:
		return fmt.Errorf("partial: exact Gram matrix with a sketch seed")
	case sk.Dims == 0 && P > ExactGramMax:
		return fmt.Errorf("partial: exact Gram matrix of %d members, limit %d (beyond, updates are sketched)", P, ExactGramMax)
	case sk.Dims != 0 && (sk.Dims < minSketchDims || sk.Dims > MaxSketchDims || sk.Dims&(sk.Dims-1) != 0):
		return fmt.Errorf("partial: %d sketch dimensions: want a power of two from %d to %d", sk.Dims, minSketchDims, MaxSketchDims)
	}
	return nil
}

const signBit = 1 << 31

// bucket returns coordinate j's bucket (low bits) and sign (signBit set: negative).
func (sk Sketch) bucket(j uint64) uint32 {
	// splitmix64's output function over the sequence seed + (j+1)·γ.
	x := sk.Seed + (j+1)*0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	return uint32(x)&uint32(sk.Dims-1) | uint32(x>>32)&signBit
}

// sketch adds the count sketch of each update, a slice starting at global index start, to its
// row of dst (len(updates) rows of sk.Dims).
func (sk Sketch) sketch(dst []float64, start uint64, updates [][]float32) {
	if len(updates) == 0 {
		return
	}
	idx := make([]uint32, len(updates[0]))
	for j := range idx {
		idx[j] = sk.bucket(start + uint64(j))
	}
	D, mask := sk.Dims, uint32(sk.Dims-1)
	for i, d := range updates {
		row := dst[i*D : (i+1)*D]
		for j, x := range d[:len(idx)] {
			e := idx[j]
			row[e&mask] += float64(math.Float32frombits(math.Float32bits(x) ^ e&signBit))
		}
	}
}

// dot64 is dot for float64 vectors; the conversion of each product keeps a compiler from fusing
// it with the addition, so the bits are the same on every architecture.
func dot64(a, b []float64) float64 {
	var s0, s1, s2, s3 float64
	b = b[:len(a)]
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i] * b[i])
		s1 += float64(a[i+1] * b[i+1])
		s2 += float64(a[i+2] * b[i+2])
		s3 += float64(a[i+3] * b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i] * b[i])
	}
	return (s0 + s1) + (s2 + s3)
}
