package attribution

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/consensus"
)

// members returns n sorted member IDs of the length of a key ID.
func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%051d", i)
	}
	return out
}

// partialOf computes a partial over a random world of P members.
func partialOf(t testing.TB, P, K, n int, sk Sketch) Partial {
	t.Helper()
	w := newWorld(uint64(P), n, K)
	us := make([][]float32, P)
	for i := range us {
		us[i] = w.mix(0.3, w.gbar, 1, w.gauss(1))
	}
	p, err := ComputePartial(1000, uint64(1000+n), w.g, w.u, members(P), us, sk)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPartialWireRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Partial
	}{
		{"exact", partialOf(t, 5, 3, 100, Sketch{})},
		{"exact, no previous step", func() Partial {
			p := partialOf(t, 3, 2, 50, Sketch{})
			p.HasU, p.UD, p.GU, p.UU = false, make([]float64, 3), make([]float64, 2), 0
			return p
		}()},
		{"sketched", partialOf(t, 70, 4, 300, SketchFor(70, 7, []byte("h")))},
		{"sketch of few members", partialOf(t, 2, 1, 30, Sketch{Dims: 8, Seed: 1})},
		{"no members", partialOf(t, 0, 1, 10, Sketch{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.p.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tc.p.EncodedLen() {
				t.Fatalf("encoded %d bytes, EncodedLen %d", len(b), tc.p.EncodedLen())
			}
			got, err := DecodePartial(b)
			if err != nil {
				t.Fatal(err)
			}
			if !equalPartial(got, tc.p) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.p)
			}
		})
	}
}

// equalPartial compares partials, nil and empty slices alike.
func equalPartial(a, b Partial) bool {
	norm := func(p Partial) Partial {
		for _, xs := range []*[]float64{&p.GD, &p.UD, &p.GU, &p.NormSq, &p.Gram, &p.S} {
			if len(*xs) == 0 {
				*xs = nil
			}
		}
		if len(p.Members) == 0 {
			p.Members = nil
		}
		return p
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// TestDecodePartialRefuses: every way a buffer can be wrong is refused with ErrMalformedPartial,
// before anything is allocated for the lengths it claims.
func TestDecodePartialRefuses(t *testing.T) {
	good, err := partialOf(t, 3, 2, 40, Sketch{}).AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := partialOf(t, 3, 2, 40, Sketch{Dims: 16, Seed: 9}).AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(b []byte, f func(b []byte) []byte) []byte { return f(bytes.Clone(b)) }
	put32 := func(at int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[at:], v); return b }
	}
	value := func(i int) int { return wireFixed + 3*(1+52) + 8*i } // the i-th float of good
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter"},
		{"magic", edit(good, func(b []byte) []byte { b[0] = 'X'; return b }), "magic"},
		{"version", edit(good, func(b []byte) []byte { b[2] = 2; return b }), "version"},
		{"flags", edit(good, func(b []byte) []byte { b[3] = 2; return b }), "flags"},
		{"members", edit(good, put32(20, MaxMembers+1)), "members"},
		{"exact Gram matrix of too many", edit(good, put32(20, 4000)), "exact Gram matrix of 4000"},
		{"members beyond the bytes", edit(sk, put32(20, 4000)), "4000 members in"},
		{"batches", edit(good, put32(24, 0)), "batches"},
		{"too many batches", edit(good, put32(24, MaxBatches+1)), "batches"},
		{"dims", edit(good, put32(28, MaxSketchDims*2)), "sketch dimensions"},
		{"dims not a power of two", edit(sk, put32(28, 24)), "power of two"},
		{"exact with a seed", edit(good, func(b []byte) []byte { b[32] = 1; return b }), "seed"},
		{"truncated", good[:len(good)-1], "want"},
		{"trailing", append(bytes.Clone(good), 0), "want"},
		{"empty member", edit(good, func(b []byte) []byte { b[wireFixed] = 0; return b }), "member 0"},
		{"unsorted members", edit(good, func(b []byte) []byte { b[wireFixed+1] = 'z'; return b }), "sorted"},
		{"nan", edit(good, func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[value(1):], math.Float64bits(math.NaN()))
			return b
		}), "non-finite"},
		{"sketch with a Gram matrix's length", edit(good, put32(28, 8)), "want"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodePartial(tc.b)
			if !errors.Is(err, ErrMalformedPartial) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrMalformedPartial saying %q", err, tc.want)
			}
		})
	}
	if _, err := DecodePartial(make([]byte, MaxPartialBytes+1)); !errors.Is(err, ErrPartialTooLarge) {
		t.Fatalf("oversized buffer: %v, want ErrPartialTooLarge", err)
	}
}

// TestMaxPartialBytes: the largest partial the limits allow — MaxMembers members with IDs of
// MaxMemberLen bytes, MaxBatches batches, SketchDims dimensions — fits MaxPartialBytes; one with
// sketches of MaxSketchDims is refused as too large, clearly.
func TestMaxPartialBytes(t *testing.T) {
	big := func(D int) Partial {
		P, K := MaxMembers, MaxBatches
		p := Partial{Start: 0, End: 1, K: K, Members: make([]string, P), GD: make([]float64, P*K), UD: make([]float64, P),
			GU: make([]float64, K), NormSq: make([]float64, P), Sketch: Sketch{Dims: D, Seed: 1}, S: make([]float64, P*D)}
		for i := range p.Members {
			p.Members[i] = fmt.Sprintf("%0*d", MaxMemberLen, i)
		}
		return p
	}
	p := big(SketchDims)
	b, err := p.AppendBinary(nil)
	if err != nil {
		t.Fatalf("the largest partial at SketchDims: %v", err)
	}
	t.Logf("%d members, %d batches, %d dimensions: %d bytes of %d", MaxMembers, MaxBatches, SketchDims, len(b), MaxPartialBytes)
	if _, err := DecodePartial(b); err != nil {
		t.Fatal(err)
	}
	p = big(MaxSketchDims)
	if _, err := p.AppendBinary(nil); !errors.Is(err, ErrPartialTooLarge) || !strings.Contains(err.Error(), "4096 members") {
		t.Fatalf("a partial beyond the limit: %v, want ErrPartialTooLarge naming its size", err)
	}
	// What a round of 1,000 participants sends at the defaults.
	p = partialOf(t, 1000, 8, 64, SketchFor(1000, 1, nil))
	if n := p.EncodedLen(); n > 3<<20 {
		t.Errorf("a partial of 1000 members is %d bytes", n)
	}
}

// FuzzDecodePartial: any bytes decode cleanly or are refused; what decodes encodes to the same
// bytes (the layout is canonical) and combines and scores without panicking.
func FuzzDecodePartial(f *testing.F) {
	for _, p := range []Partial{partialOf(f, 3, 2, 40, Sketch{}), partialOf(f, 2, 1, 30, Sketch{Dims: 8, Seed: 5}), partialOf(f, 0, 1, 10, Sketch{})} {
		b, err := p.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("SP\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePartial(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedPartial) && !errors.Is(err, ErrPartialTooLarge) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		again, err := p.AppendBinary(nil)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded partial encodes to %d other bytes (%v)", len(again), err)
		}
		p.Start = 0
		sums, err := Combine(p.End, []Partial{p})
		if err != nil {
			t.Fatalf("a decoded partial does not combine: %v", err)
		}
		var parts []Participant
		for i, m := range p.Members {
			parts = append(parts, Participant{Member: m, Order: uint32(i), Samples: 1,
				Contributors: []consensus.ContributorData{{Name: m, Samples: 1}}})
		}
		if _, err := Score(sums, parts, Config{}); err != nil {
			t.Fatalf("score: %v", err)
		}
	})
}
