package attribution

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Partial holds the inner products one aggregator computed over its slice [Start, End) of the
// parameter vector for one round. Members are the participants whose update for the slice
// arrived; the matrices are row-major over Members (and K validation micro-batches).
type Partial struct {
	_msgpack   struct{} `msgpack:",as_array"`
	Start, End uint64
	Members    []string  // sorted, unique
	K          int       // validation micro-batches
	GD         []float64 // [i*K+k] ⟨g_k, Δ_i⟩
	UD         []float64 // [i] ⟨u, Δ_i⟩
	GU         []float64 // [k] ⟨g_k, u⟩
	UU         float64   // ‖u‖²
	HasU       bool      // false when the aggregator did not hold the previous global step
	Gram       []float64 // [i*P+j] ⟨Δ_i, Δ_j⟩, P = len(Members)
}

// ComputePartial computes the partial sums of a slice from the validation gradients restricted to
// it (g[k] has the slice's length), the previous global step's slice (nil if unknown) and the
// members' decoded updates (each of the slice's length).
func ComputePartial(start, end uint64, g [][]float32, u []float32, members []string, updates [][]float32) (Partial, error) {
	n := int(end - start)
	if len(members) != len(updates) {
		return Partial{}, fmt.Errorf("partial: %d members, %d updates", len(members), len(updates))
	}
	if !slices.IsSorted(members) {
		return Partial{}, fmt.Errorf("partial: members not sorted")
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
		UD: make([]float64, P), GU: make([]float64, K), Gram: make([]float64, P*P), HasU: u != nil}
	for i, d := range updates {
		for k, gk := range g {
			p.GD[i*K+k] = dot(gk, d)
		}
		if u != nil {
			p.UD[i] = dot(u, d)
		}
		for j := i; j < P; j++ {
			v := dot(d, updates[j])
			p.Gram[i*P+j], p.Gram[j*P+i] = v, v
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

// dot accumulates in float64, in index order: the same inputs give the same bits everywhere.
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
	P, K := len(p.Members), p.K
	switch {
	case p.End <= p.Start:
		return fmt.Errorf("partial: empty range [%d,%d)", p.Start, p.End)
	case K < 1 || K > 1024:
		return fmt.Errorf("partial: %d validation batches", K)
	case P > 1<<12:
		return fmt.Errorf("partial: %d members", P)
	case len(p.GD) != P*K || len(p.UD) != P || len(p.GU) != K || len(p.Gram) != P*P:
		return fmt.Errorf("partial: matrix sizes do not match %d members and %d batches", P, K)
	}
	for i := 1; i < P; i++ {
		if p.Members[i-1] >= p.Members[i] {
			return fmt.Errorf("partial: members not sorted and unique at %q", p.Members[i])
		}
	}
	for _, xs := range [][]float64{p.GD, p.UD, p.GU, p.Gram, {p.UU}} {
		for _, x := range xs {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("partial: non-finite value %v", x)
			}
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
	Gram    []float64
}

func (s *Sums) check() error {
	P, K := len(s.Members), s.K
	if K < 1 || len(s.GD) != P*K || len(s.UD) != P || len(s.GU) != K || len(s.Gram) != P*P {
		return fmt.Errorf("attribution: sums do not match %d members and %d batches", P, K)
	}
	return nil
}

// Combine adds up the partials of all slices of a round; they must cover [0, n) exactly once.
// Members missing from any slice are dropped. If any slice lacks the previous global step, the
// de-staling terms are dropped for all (u = 0).
func Combine(n uint64, parts []Partial) (Sums, error) {
	if len(parts) == 0 {
		return Sums{}, fmt.Errorf("attribution: no partials")
	}
	ps := slices.Clone(parts)
	slices.SortFunc(ps, func(a, b Partial) int { return cmp.Compare(a.Start, b.Start) })
	var at uint64
	K := ps[0].K
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
	P := len(members)
	s := Sums{Members: members, K: K, GD: make([]float64, P*K), UD: make([]float64, P), GU: make([]float64, K), Gram: make([]float64, P*P)}
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
			for b := range members {
				s.Gram[a*P+b] += p.Gram[i*Q+pos[b]]
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
