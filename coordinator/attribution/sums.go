package attribution

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/cohortlab/cohort/consensus"
)

// Partial holds the inner products one aggregator computed over its slice [Start, End) of the
// parameter vector for one round. Members are the participants whose update for the slice
// arrived; the matrices are row-major over Members (and K validation micro-batches).
//
// The updates' pairwise products come one of two ways (Sketch, chosen by SketchFor from the
// round's participant count, so every aggregator and every leader choose alike): the exact Gram
// matrix, for rounds of at most ExactGramMax participants, or, beyond, a count sketch of each
// update (Sketch.Dims values a member) from which the leader estimates the cosines. The squared
// norms are exact either way.
//
// On the wire a Partial travels as a frame's payload in the layout of AppendBinary.
type Partial struct {
	Start, End uint64
	Members    []string  // sorted, unique
	K          int       // validation micro-batches
	GD         []float64 // [i*K+k] ⟨g_k, Δ_i⟩
	UD         []float64 // [i] ⟨u, Δ_i⟩
	GU         []float64 // [k] ⟨g_k, u⟩
	UU         float64   // ‖u‖²
	HasU       bool      // false when the aggregator did not hold the previous global step
	NormSq     []float64 // [i] ‖Δ_i‖²
	Sketch     Sketch    // zero: Gram is exact; else S holds the sketches
	Gram       []float64 // exact only: [i*P+j] ⟨Δ_i, Δ_j⟩, P = len(Members)
	S          []float64 // sketched only: [i*Sketch.Dims+d] the count sketch of Δ_i's slice
}

// Limits on a Partial (Check, DecodePartial).
const (
	// MaxMembers bounds a partial's members: consensus.MaxListLen, the most participants a round
	// can name.
	MaxMembers = consensus.MaxListLen
	// MaxBatches bounds K, the validation micro-batches.
	MaxBatches = 64
	// MaxMemberLen bounds a member ID's bytes (a key ID is 52).
	MaxMemberLen = 255
)

// ComputePartial computes the partial sums of a slice from the validation gradients restricted to
// it (g[k] has the slice's length), the previous global step's slice (nil if unknown) and the
// members' decoded updates (each of the slice's length). sk chooses the exact Gram matrix (the
// zero Sketch: at most ExactGramMax members) or count sketches (see SketchFor).
//
// The work is P·(K+2) dot products of the slice's length, plus, for the pairwise products,
// P(P+1)/2 more when exact or one pass over each update when sketched: linear in P beyond
// ExactGramMax.
func ComputePartial(start, end uint64, g [][]float32, u []float32, members []string, updates [][]float32, sk Sketch) (Partial, error) {
	n := int(end - start)
	if len(members) != len(updates) {
		return Partial{}, fmt.Errorf("partial: %d members, %d updates", len(members), len(updates))
	}
	if !slices.IsSorted(members) {
		return Partial{}, fmt.Errorf("partial: members not sorted")
	}
	if err := sk.check(len(members)); err != nil {
		return Partial{}, err
	}
	for k, gk := range g {
		if len(gk) != n {
			return Partial{}, fmt.Errorf("partial: gradient %d has %d values for a slice of %d", k, len(gk), n)
		}
	}
	for i, d := range updates {
		if len(d) != n {
			return Partial{}, fmt.Errorf("partial: update of %s has %d values for a slice of %d", members[i], len(d), n)
		}
	}
	if u != nil && len(u) != n {
		return Partial{}, fmt.Errorf("partial: previous step has %d values for a slice of %d", len(u), n)
	}
	P, K := len(members), len(g)
	p := Partial{Start: start, End: end, Members: slices.Clone(members), K: K, GD: make([]float64, P*K),
		UD: make([]float64, P), GU: make([]float64, K), NormSq: make([]float64, P), HasU: u != nil, Sketch: sk}
	if sk.Dims == 0 {
		p.Gram = make([]float64, P*P)
	} else {
		p.S = make([]float64, P*sk.Dims)
		sk.sketch(p.S, start, updates)
	}
	for i, d := range updates {
		for k, gk := range g {
			p.GD[i*K+k] = dot(gk, d)
		}
		if u != nil {
			p.UD[i] = dot(u, d)
		}
		p.NormSq[i] = dot(d, d)
		if sk.Dims == 0 {
			p.Gram[i*P+i] = p.NormSq[i]
			for j := i + 1; j < P; j++ {
				v := dot(d, updates[j])
				p.Gram[i*P+j], p.Gram[j*P+i] = v, v
			}
		}
	}
	if u != nil {
		for k, gk := range g {
			p.GU[k] = dot(gk, u)
		}
		p.UU = dot(u, u)
	}
	return p, nil
}

// dot accumulates in float64, in index order: the same inputs give the same bits everywhere (a
// product of two float32 values is exact in float64, so a fused multiply-add rounds alike).
func dot(a, b []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i]) * float64(b[i])
		s1 += float64(a[i+1]) * float64(b[i+1])
		s2 += float64(a[i+2]) * float64(b[i+2])
		s3 += float64(a[i+3]) * float64(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i]) * float64(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// Check validates a partial received from the network: consistent lengths, finite values.
func (p *Partial) Check() error {
	P, K, D := len(p.Members), p.K, p.Sketch.Dims
	wantGram, wantS := P*P, P*D
	if D > 0 {
		wantGram = 0
	}
	switch {
	case p.End <= p.Start:
		return fmt.Errorf("partial: empty range [%d,%d)", p.Start, p.End)
	case K < 1 || K > MaxBatches:
		return fmt.Errorf("partial: %d validation batches, limit %d", K, MaxBatches)
	case P > MaxMembers:
		return fmt.Errorf("partial: %d members, limit %d", P, MaxMembers)
	case len(p.GD) != P*K || len(p.UD) != P || len(p.GU) != K || len(p.NormSq) != P || len(p.Gram) != wantGram || len(p.S) != wantS:
		return fmt.Errorf("partial: matrix sizes do not match %d members, %d batches and %d sketch dimensions", P, K, D)
	}
	if err := p.Sketch.check(P); err != nil {
		return err
	}
	for i, m := range p.Members {
		if m == "" || len(m) > MaxMemberLen {
			return fmt.Errorf("partial: member ID of %d bytes", len(m))
		}
		if i > 0 && p.Members[i-1] >= m {
			return fmt.Errorf("partial: members not sorted and unique at %q", m)
		}
	}
	for _, xs := range [][]float64{p.GD, p.UD, p.GU, p.NormSq, p.Gram, p.S, {p.UU}} {
		for _, x := range xs {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("partial: non-finite value %v", x)
			}
		}
	}
	for i, x := range p.NormSq {
		if x < 0 || (D == 0 && p.Gram[i*P+i] != x) {
			return fmt.Errorf("partial: squared norm %v of %s", x, p.Members[i])
		}
	}
	return nil
}

// Sums are the whole-vector inner products of a round: the Partials of every slice added up,
// over the members present in all of them.
type Sums struct {
	Members []string
	K       int
	GD      []float64
	UD      []float64
	GU      []float64
	UU      float64
	NormSq  []float64
	Sketch  Sketch
	Gram    []float64 // exact only
	S       []float64 // sketched only: the whole vectors' count sketches, added up over the slices
}

func (s *Sums) check() error {
	P, K, D := len(s.Members), s.K, s.Sketch.Dims
	wantGram := P * P
	if D > 0 {
		wantGram = 0
	}
	if K < 1 || len(s.GD) != P*K || len(s.UD) != P || len(s.GU) != K || len(s.NormSq) != P || len(s.Gram) != wantGram || len(s.S) != P*D {
		return fmt.Errorf("attribution: sums do not match %d members, %d batches and %d sketch dimensions", P, K, D)
	}
	return nil
}

// cosine returns the function cos(Δ_i, Δ_j) over the indices of s.Members: exact from the Gram
// matrix, or estimated from the sketches (their cosine, which is 1 for an update and any positive
// multiple of it). An empty update has cosine 0 with everything.
func (s *Sums) cosine() func(i, j int) float64 {
	P := len(s.Members)
	norms := make([]float64, P)
	if D := s.Sketch.Dims; D > 0 {
		for i := range norms {
			norms[i] = math.Sqrt(dot64(s.S[i*D:(i+1)*D], s.S[i*D:(i+1)*D]))
		}
		return func(i, j int) float64 {
			if norms[i] == 0 || norms[j] == 0 || s.NormSq[i] == 0 || s.NormSq[j] == 0 {
				return 0
			}
			return dot64(s.S[i*D:(i+1)*D], s.S[j*D:(j+1)*D]) / (norms[i] * norms[j])
		}
	}
	for i := range norms {
		norms[i] = math.Sqrt(max(s.NormSq[i], 0))
	}
	return func(i, j int) float64 {
		if norms[i] == 0 || norms[j] == 0 {
			return 0
		}
		return s.Gram[i*P+j] / (norms[i] * norms[j])
	}
}

// Combine adds up the partials of all slices of a round; they must cover [0, n) exactly once,
// with the same Sketch. Members missing from any slice are dropped. If any slice lacks the
// previous global step, the de-staling terms are dropped for all (u = 0). The slices are added in
// the order of their Start: the same partials give the same bits whatever order they came in.
func Combine(n uint64, parts []Partial) (Sums, error) {
	if len(parts) == 0 {
		return Sums{}, fmt.Errorf("attribution: no partials")
	}
	ps := slices.Clone(parts)
	slices.SortFunc(ps, func(a, b Partial) int { return cmp.Compare(a.Start, b.Start) })
	var at uint64
	K, sk := ps[0].K, ps[0].Sketch
	count := map[string]int{}
	hasU := true
	for i := range ps {
		p := &ps[i]
		if err := p.Check(); err != nil {
			return Sums{}, err
		}
		if p.Start != at {
			return Sums{}, fmt.Errorf("attribution: partials leave a gap or overlap at %d", at)
		}
		if p.K != K {
			return Sums{}, fmt.Errorf("attribution: partials use %d and %d validation batches", K, p.K)
		}
		if p.Sketch != sk {
			return Sums{}, fmt.Errorf("attribution: partials use sketches %v and %v", sk, p.Sketch)
		}
		at = p.End
		hasU = hasU && p.HasU
		for _, m := range p.Members {
			count[m]++
		}
	}
	if at != n {
		return Sums{}, fmt.Errorf("attribution: partials cover [0,%d) of %d parameters", at, n)
	}
	var members []string
	for m, c := range count {
		if c == len(ps) {
			members = append(members, m)
		}
	}
	slices.Sort(members)
	P, D := len(members), sk.Dims
	s := Sums{Members: members, K: K, GD: make([]float64, P*K), UD: make([]float64, P), GU: make([]float64, K),
		NormSq: make([]float64, P), Sketch: sk}
	if D == 0 {
		s.Gram = make([]float64, P*P)
	} else {
		s.S = make([]float64, P*D)
	}
	for _, p := range ps {
		pos := make([]int, P) // index of each member in p
		for a, m := range members {
			pos[a], _ = slices.BinarySearch(p.Members, m)
		}
		Q := len(p.Members)
		for a := range members {
			i := pos[a]
			for k := 0; k < K; k++ {
				s.GD[a*K+k] += p.GD[i*K+k]
			}
			if hasU {
				s.UD[a] += p.UD[i]
			}
			s.NormSq[a] += p.NormSq[i]
			if D == 0 {
				for b := range members {
					s.Gram[a*P+b] += p.Gram[i*Q+pos[b]]
				}
				continue
			}
			row, src := s.S[a*D:(a+1)*D], p.S[i*D:(i+1)*D]
			for d := range row {
				row[d] += src[d]
			}
		}
		if hasU {
			for k := 0; k < K; k++ {
				s.GU[k] += p.GU[k]
			}
			s.UU += p.UU
		}
	}
	return s, nil
}
