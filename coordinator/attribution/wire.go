package attribution

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A Partial's wire layout (version 1), all integers and floats little-endian:
//
//	"SP" | version (1 byte, = 1) | flags (1 byte: bit 0 HasU)
//	Start, End (uint64) | P, K, Dims (uint32) | Seed (uint64)
//	P members: length (1 byte, 1..MaxMemberLen) | bytes
//	UU | GD (P·K) | UD (P) | GU (K) | NormSq (P) | Gram (P·P, Dims = 0) or S (P·Dims)  (float64)
//
// The layout is canonical: a buffer DecodePartial accepts is what AppendBinary writes for the
// Partial it decodes to.
const (
	wireMagic0, wireMagic1 = 'S', 'P'
	wireVersion            = 1
	wireFixed              = 4 + 8 + 8 + 3*4 + 8
	// MaxPartialBytes bounds an encoded Partial: it holds MaxMembers members with IDs of
	// MaxMemberLen bytes, MaxBatches validation batches and sketches of SketchDims dimensions
	// (11.6 MB, TestMaxPartialBytes), not sketches of MaxSketchDims for that many members. At the
	// defaults (K = 8, 256 dimensions) a partial is about 2.2 KB a member: 2.2 MB for 1,000.
	MaxPartialBytes = 16 << 20
)

// Errors of DecodePartial and AppendBinary.
var (
	// ErrPartialTooLarge: an encoded partial would exceed MaxPartialBytes.
	ErrPartialTooLarge = errors.New("partial: too large")
	// ErrMalformedPartial: the bytes are not a version-1 partial, or describe an invalid one.
	ErrMalformedPartial = errors.New("partial: malformed")
)

// EncodedLen is the length of p's encoding.
func (p Partial) EncodedLen() int {
	n := wireFixed
	for _, m := range p.Members {
		n += 1 + len(m)
	}
	return n + 8*(1+len(p.GD)+len(p.UD)+len(p.GU)+len(p.NormSq)+len(p.Gram)+len(p.S))
}

// AppendBinary appends p's encoding to dst. It refuses a partial that fails Check, and one whose
// encoding would exceed MaxPartialBytes (ErrPartialTooLarge).
func (p Partial) AppendBinary(dst []byte) ([]byte, error) {
	if err := p.Check(); err != nil {
		return dst, fmt.Errorf("%w: %w", ErrMalformedPartial, err)
	}
	n := p.EncodedLen()
	if n > MaxPartialBytes {
		return dst, fmt.Errorf("%w: %d bytes for %d members, %d batches and %v, limit %d", ErrPartialTooLarge,
			n, len(p.Members), p.K, p.Sketch, MaxPartialBytes)
	}
	dst = append(dst, wireMagic0, wireMagic1, wireVersion, 0)
	if p.HasU {
		dst[len(dst)-1] = 1
	}
	dst = binary.LittleEndian.AppendUint64(dst, p.Start)
	dst = binary.LittleEndian.AppendUint64(dst, p.End)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p.Members)))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(p.K))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(p.Sketch.Dims))
	dst = binary.LittleEndian.AppendUint64(dst, p.Sketch.Seed)
	for _, m := range p.Members {
		dst = append(append(dst, byte(len(m))), m...)
	}
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.UU))
	for _, xs := range [][]float64{p.GD, p.UD, p.GU, p.NormSq, p.Gram, p.S} {
		for _, x := range xs {
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
		}
	}
	return dst, nil
}

// DecodePartial decodes a partial from the network and checks it (Check). Every length is
// checked against the limits and the bytes at hand before anything is allocated for it: memory is
// bounded by len(b), itself at most MaxPartialBytes. Errors wrap ErrPartialTooLarge or
// ErrMalformedPartial.
func DecodePartial(b []byte) (Partial, error) {
	if len(b) > MaxPartialBytes {
		return Partial{}, fmt.Errorf("%w: %d bytes, limit %d", ErrPartialTooLarge, len(b), MaxPartialBytes)
	}
	bad := func(format string, args ...any) (Partial, error) {
		return Partial{}, fmt.Errorf("%w: %s", ErrMalformedPartial, fmt.Sprintf(format, args...))
	}
	if len(b) < wireFixed {
		return bad("%d bytes, shorter than the fixed part", len(b))
	}
	if b[0] != wireMagic0 || b[1] != wireMagic1 || b[2] != wireVersion {
		return bad("magic or version % x, want %q version %d", b[:3], "SP", wireVersion)
	}
	if b[3]&^1 != 0 {
		return bad("unknown flags %#x", b[3])
	}
	le := binary.LittleEndian
	p := Partial{HasU: b[3] == 1, Start: le.Uint64(b[4:]), End: le.Uint64(b[12:])}
	P, K, D := le.Uint32(b[20:]), le.Uint32(b[24:]), le.Uint32(b[28:])
	p.Sketch.Seed = le.Uint64(b[32:])
	switch {
	case P > MaxMembers:
		return bad("%d members, limit %d", P, MaxMembers)
	case K < 1 || K > MaxBatches:
		return bad("%d validation batches, limit %d", K, MaxBatches)
	case D > MaxSketchDims:
		return bad("%d sketch dimensions, limit %d", D, MaxSketchDims)
	}
	p.K, p.Sketch.Dims = int(K), int(D)
	if err := p.Sketch.check(int(P)); err != nil {
		return bad("%v", err)
	}
	rest := b[wireFixed:]
	if len(rest) < int(P) { // at least a length byte a member
		return bad("%d members in %d bytes", P, len(rest))
	}
	p.Members = make([]string, P)
	for i := range p.Members {
		if len(rest) < 1 || int(rest[0]) < 1 || len(rest) < 1+int(rest[0]) {
			return bad("member %d truncated or empty", i)
		}
		n := int(rest[0])
		p.Members[i] = string(rest[1 : 1+n])
		rest = rest[1+n:]
	}
	pairs := int(P * P)
	if D > 0 {
		pairs = int(P * D)
	}
	nf := 1 + int(P*K) + 2*int(P) + int(K) + pairs
	if len(rest) != 8*nf {
		return bad("%d bytes of values for %d members, %d batches and %v: want %d", len(rest), P, K, p.Sketch, 8*nf)
	}
	vals := make([]float64, nf)
	for i := range vals {
		vals[i] = math.Float64frombits(le.Uint64(rest[8*i:]))
	}
	take := func(n int) []float64 {
		out := vals[:n:n]
		vals = vals[n:]
		return out
	}
	p.UU = take(1)[0]
	p.GD, p.UD, p.GU, p.NormSq = take(int(P*K)), take(int(P)), take(int(K)), take(int(P))
	if D == 0 {
		p.Gram = take(pairs)
	} else {
		p.S = take(pairs)
	}
	if err := p.Check(); err != nil {
		return bad("%v", err)
	}
	return p, nil
}
