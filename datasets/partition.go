package datasets

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// DirichletMinPart is the least number of samples Dirichlet gives each part
// when there are enough samples: every part gets at least
// min(DirichletMinPart, n/k) samples.
const DirichletMinPart = 10

// PCG stream constants, one per partitioner, so that the same seed drives
// unrelated streams in different partitioners.
const (
	streamIID            = 0x1d1d_0001
	streamDirichlet      = 0xd1c1_0002
	streamDirichletEqual = 0xd1c1_0003
)

// rng is a small deterministic random source on math/rand/v2's PCG. Only
// PCG's raw 64-bit output is used (its algorithm is fixed by the standard
// library); bounded integers, floats and normals are derived here so that
// partitions do not change with the Go release.
type rng struct{ src *rand.PCG }

func newRNG(seed, stream uint64) rng { return rng{rand.NewPCG(seed, stream)} }

// intn returns a uniform integer in [0, n), n > 0 (Lemire's method).
func (r rng) intn(n int) int {
	un := uint64(n)
	hi, lo := bits.Mul64(r.src.Uint64(), un)
	if lo < un {
		thresh := -un % un
		for lo < thresh {
			hi, lo = bits.Mul64(r.src.Uint64(), un)
		}
	}
	return int(hi)
}

// float returns a uniform float64 in (0, 1].
func (r rng) float() float64 {
	return float64(r.src.Uint64()>>11+1) * (1.0 / (1 << 53))
}

// normal returns a standard normal variate (Box–Muller, cosine branch).
func (r rng) normal() float64 {
	u1, u2 := r.float(), r.float()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// shuffle permutes s uniformly (Fisher–Yates).
func (r rng) shuffle(s []int) {
	for i := len(s) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		s[i], s[j] = s[j], s[i]
	}
}

// logGamma returns log X for X ~ Gamma(shape a, scale 1), a > 0, by
// Marsaglia and Tsang (2000); for a < 1 it uses X = Gamma(a+1)·U^(1/a) in
// log space, so that tiny shapes do not underflow to 0.
func (r rng) logGamma(a float64) float64 {
	if a < 1 {
		return r.logGamma(a+1) + math.Log(r.float())/a
	}
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.normal()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.float()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return math.Log(d * v)
		}
	}
}

// dirichlet fills p with a draw from the symmetric Dirichlet(alpha) on len(p) parts.
func (r rng) dirichlet(p []float64, alpha float64) {
	mx := math.Inf(-1)
	for i := range p {
		p[i] = r.logGamma(alpha)
		mx = max(mx, p[i])
	}
	sum := 0.0
	for i := range p {
		p[i] = math.Exp(p[i] - mx)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
}

// IID splits the indices 0..n-1 uniformly at random into k parts whose sizes
// differ by at most one (the first n%k parts hold one more). Each part is
// sorted ascending. The result depends only on (n, k, seed). It panics if
// n < 0 or k <= 0 (programmer errors); Partition.Split returns errors instead.
func IID(n, k int, seed uint64) [][]int {
	if n < 0 || k <= 0 {
		panic(fmt.Sprintf("datasets: IID(n=%d, k=%d): need n >= 0 and k >= 1", n, k))
	}
	sizes := make([]int, k)
	for j := range sizes {
		sizes[j] = n / k
		if j < n%k {
			sizes[j]++
		}
	}
	return dealShuffled(n, sizes, seed)
}

// dealShuffled shuffles 0..n-1 (seeded, IID's stream) and gives part j the j-th run of sizes[j]
// of the shuffled order (the sizes sum to n); each part is sorted ascending.
func dealShuffled(n int, sizes []int, seed uint64) [][]int {
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	newRNG(seed, streamIID).shuffle(perm)
	// Part j takes the j-th run of the shuffled order; collecting indices in increasing order
	// yields each part sorted without a sort.
	owner := make([]int32, n)
	off := 0
	parts := make([][]int, len(sizes))
	for j, size := range sizes {
		for _, i := range perm[off : off+size] {
			owner[i] = int32(j)
		}
		parts[j] = make([]int, 0, size)
		off += size
	}
	for i, j := range owner {
		parts[j] = append(parts[j], i)
	}
	return parts
}

// Dirichlet splits samples by label skew: for each class c in turn, it draws
// proportions q ~ Dirichlet(alpha, …, alpha) over the k parts and deals the
// class's samples (shuffled) out in those proportions, rounding by largest
// remainder. Small alpha (0.1) gives parts dominated by a few classes; large
// alpha (100) approaches IID.
//
// Minimum size rule: afterwards, while some part has fewer than
// m = min(DirichletMinPart, n/k) samples, the smallest part (lowest index on
// ties) takes one sample from the largest part (lowest index on ties): the
// most recently dealt sample of the class that part holds most of (lowest
// class on ties). This is deterministic, terminates (at most k·m moves) and
// disturbs the skew as little as one move at a time can.
//
// Each part is sorted ascending. The result depends only on the arguments.
// Errors (wrapping ErrInvalidArgument): k < 1, classes < 1, alpha not a
// positive finite number, a label outside [0, classes), fewer samples than parts.
func Dirichlet(labels []int, classes, k int, alpha float64, seed uint64) ([][]int, error) {
	if k < 1 || classes < 1 {
		return nil, fmt.Errorf("%w: dirichlet: need k >= 1 and classes >= 1, got k=%d classes=%d", ErrInvalidArgument, k, classes)
	}
	if !(alpha > 0) || math.IsInf(alpha, 1) {
		return nil, fmt.Errorf("%w: dirichlet: alpha %v must be a positive finite number", ErrInvalidArgument, alpha)
	}
	n := len(labels)
	if n < k {
		return nil, fmt.Errorf("%w: dirichlet: %d samples cannot fill %d parts", ErrInvalidArgument, n, k)
	}
	byClass := make([][]int, classes)
	for i, l := range labels {
		if l < 0 || l >= classes {
			return nil, fmt.Errorf("%w: dirichlet: label %d of sample %d outside [0,%d)", ErrInvalidArgument, l, i, classes)
		}
		byClass[l] = append(byClass[l], i)
	}
	r := newRNG(seed, streamDirichlet)
	// parts[j][c]: samples of class c dealt to part j, in dealing order.
	parts := make([][][]int, k)
	for j := range parts {
		parts[j] = make([][]int, classes)
	}
	sizes := make([]int, k)
	q := make([]float64, k)
	counts := make([]int, k)
	for c, idx := range byClass {
		r.shuffle(idx)
		r.dirichlet(q, alpha)
		largestRemainder(counts, q, len(idx))
		off := 0
		for j, cnt := range counts {
			parts[j][c] = idx[off : off+cnt : off+cnt]
			sizes[j] += cnt
			off += cnt
		}
	}
	m := min(DirichletMinPart, n/k)
	for {
		small, large := 0, 0
		for j, s := range sizes {
			if s < sizes[small] {
				small = j
			}
			if s > sizes[large] {
				large = j
			}
		}
		if sizes[small] >= m {
			break
		}
		c := 0
		for cc, s := range parts[large] {
			if len(s) > len(parts[large][c]) {
				c = cc
			}
		}
		from := parts[large][c]
		x := from[len(from)-1]
		parts[large][c] = from[:len(from)-1]
		parts[small][c] = append(parts[small][c], x)
		sizes[large]--
		sizes[small]++
	}
	out := make([][]int, k)
	for j := range parts {
		out[j] = make([]int, 0, sizes[j])
		for _, s := range parts[j] {
			out[j] = append(out[j], s...)
		}
		slices.Sort(out[j])
	}
	return out, nil
}

// DirichletEqual splits samples by label skew into k parts of equal size (n/k each, the
// remainder one more to the lower parts): each part j draws its own class proportions
// p_j ~ Dirichlet(alpha, …, alpha), and the parts take samples in turns, one at a time, part j
// drawing a class from p_j restricted to the classes with samples left and taking that class's
// next sample (each class shuffled once). What differs between parts is then what their data is,
// not how much of it there is, the label-skew setting of the federated-learning literature
// ("Dirichlet shards of equal size"); Dirichlet instead deals each class out by proportions over
// the parts, so part sizes vary with the draws.
//
// Each part is sorted ascending. The result depends only on the arguments. Errors (wrapping
// ErrInvalidArgument) are Dirichlet's.
func DirichletEqual(labels []int, classes, k int, alpha float64, seed uint64) ([][]int, error) {
	if k < 1 || classes < 1 {
		return nil, fmt.Errorf("%w: dirichlet-equal: need k >= 1 and classes >= 1, got k=%d classes=%d", ErrInvalidArgument, k, classes)
	}
	if !(alpha > 0) || math.IsInf(alpha, 1) {
		return nil, fmt.Errorf("%w: dirichlet-equal: alpha %v must be a positive finite number", ErrInvalidArgument, alpha)
	}
	n := len(labels)
	if n < k {
		return nil, fmt.Errorf("%w: dirichlet-equal: %d samples cannot fill %d parts", ErrInvalidArgument, n, k)
	}
	byClass := make([][]int, classes)
	for i, l := range labels {
		if l < 0 || l >= classes {
			return nil, fmt.Errorf("%w: dirichlet-equal: label %d of sample %d outside [0,%d)", ErrInvalidArgument, l, i, classes)
		}
		byClass[l] = append(byClass[l], i)
	}
	r := newRNG(seed, streamDirichletEqual)
	for _, idx := range byClass {
		r.shuffle(idx)
	}
	props := make([][]float64, k)
	for j := range props {
		props[j] = make([]float64, classes)
		r.dirichlet(props[j], alpha)
	}
	out := make([][]int, k)
	want := make([]int, k)
	for j := range want {
		want[j] = n / k
		if j < n%k {
			want[j]++
		}
		out[j] = make([]int, 0, want[j])
	}
	next := make([]int, classes) // the next unused sample of each class
	for t := 0; t < n/k+1; t++ {
		for j := range out {
			if len(out[j]) == want[j] {
				continue
			}
			// A class from p_j over the classes with samples left; if p_j gives them no weight
			// (alpha small enough to underflow), the first class with samples left.
			var total float64
			for c, q := range props[j] {
				if next[c] < len(byClass[c]) {
					total += q
				}
			}
			c := -1
			if total > 0 {
				u := r.float() * total
				for cc, q := range props[j] {
					if next[cc] == len(byClass[cc]) || q == 0 {
						continue
					}
					c = cc
					if u -= q; u < 0 {
						break
					}
				}
			}
			if c < 0 {
				for cc := range byClass {
					if next[cc] < len(byClass[cc]) {
						c = cc
						break
					}
				}
			}
			out[j] = append(out[j], byClass[c][next[c]])
			next[c]++
		}
	}
	for j := range out {
		slices.Sort(out[j])
	}
	return out, nil
}

// largestRemainder sets counts to integers summing to total, proportional to
// q (which sums to 1): floors first, then one more for the largest fractional
// parts (lowest index on ties).
func largestRemainder(counts []int, q []float64, total int) {
	type rem struct {
		frac float64
		j    int
	}
	rems := make([]rem, len(q))
	left := total
	for j, p := range q {
		x := p * float64(total)
		counts[j] = int(math.Floor(x))
		left -= counts[j]
		rems[j] = rem{x - math.Floor(x), j}
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return cmp.Compare(b.frac, a.frac) })
	for i := 0; left > 0; i = (i + 1) % len(rems) {
		counts[rems[i].j]++
		left--
	}
	for left < 0 { // floating-point slack: take back from the largest
		j := slices.Index(counts, slices.Max(counts))
		counts[j]--
		left++
	}
}

// Natural splits samples by group (a speaker, a writer, a device): each
// group goes whole to one part. Groups are taken largest first (by name on
// ties) and each goes to the part with the fewest samples so far (lowest
// index on ties), which keeps parts balanced as far as whole groups allow.
// groups[i] is the group of sample i. Each part is sorted ascending. Parts
// are empty when k exceeds the number of groups. It panics if k <= 0 (a
// programmer error); Partition.Split returns errors instead.
func Natural(groups []string, k int) [][]int {
	if k <= 0 {
		panic(fmt.Sprintf("datasets: Natural(k=%d): need k >= 1", k))
	}
	members := map[string][]int{}
	for i, g := range groups {
		members[g] = append(members[g], i)
	}
	names := make([]string, 0, len(members))
	for g := range members {
		names = append(names, g)
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(len(members[b]), len(members[a])); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([][]int, k)
	for _, g := range names {
		j := 0
		for jj := range parts {
			if len(parts[jj]) < len(parts[j]) {
				j = jj
			}
		}
		parts[j] = append(parts[j], members[g]...)
	}
	for j := range parts {
		if parts[j] == nil {
			parts[j] = []int{}
		}
		slices.Sort(parts[j])
	}
	return parts
}

// PartitionKind names a partitioner.
type PartitionKind uint8

// Partition kinds. The zero value is IID.
const (
	KindIID PartitionKind = iota
	KindDirichlet
	KindNatural
	KindDirichletEqual
)

// Partition is a parsed partition spec. The zero value is "iid".
type Partition struct {
	Kind  PartitionKind
	Alpha float64 // Dirichlet concentration; used only by KindDirichlet and KindDirichletEqual
	// weights are IID's relative part sizes in canonical form ("1,2,4"); "" = equal parts.
	// A string keeps Partition comparable; Weights parses it.
	weights string
}

// MaxWeight bounds one relative part size of a sized IID partition.
const MaxWeight = 1e6

// Weights are the relative part sizes of a sized IID partition ("iid:1,2,4"), nil for equal
// parts.
func (p Partition) Weights() []float64 {
	if p.weights == "" {
		return nil
	}
	var w []float64
	for _, f := range strings.Split(p.weights, ",") {
		x, _ := strconv.ParseFloat(f, 64) // canonical: ParsePartition checked it
		w = append(w, x)
	}
	return w
}

// ParsePartition parses "iid", "iid:W1,W2,…" (IID parts of relative sizes
// W1, W2, … — at least two positive numbers up to MaxWeight, one per part),
// "dirichlet:ALPHA" (ALPHA a positive finite number, e.g. "dirichlet:0.5"),
// "dirichlet-equal:ALPHA" (the same skew in parts of equal size) or "natural". Surrounding spaces are ignored. Errors wrap ErrInvalidArgument
// and quote the spec.
func ParsePartition(spec string) (Partition, error) {
	s := strings.TrimSpace(spec)
	name, arg, hasArg := strings.Cut(s, ":")
	var p Partition
	switch name {
	case "iid":
		p.Kind = KindIID
		if hasArg {
			fs := strings.Split(arg, ",")
			if len(fs) < 2 {
				return Partition{}, fmt.Errorf("%w: partition %q: iid takes relative part sizes, at least two (e.g. \"iid:1,2,4\")", ErrInvalidArgument, spec)
			}
			canon := make([]string, len(fs))
			for i, f := range fs {
				x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
				if err != nil || !(x > 0) || x > MaxWeight {
					return Partition{}, fmt.Errorf("%w: partition %q: part size %q is not a positive number up to %g", ErrInvalidArgument, spec, f, float64(MaxWeight))
				}
				canon[i] = strconv.FormatFloat(x, 'g', -1, 64)
			}
			p.weights = strings.Join(canon, ",")
			return p, nil
		}
	case "natural":
		p.Kind = KindNatural
	case "dirichlet", "dirichlet-equal":
		if !hasArg || arg == "" {
			return Partition{}, fmt.Errorf("%w: partition %q: %s needs a concentration, e.g. \"%s:0.5\"", ErrInvalidArgument, spec, name, name)
		}
		a, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return Partition{}, fmt.Errorf("%w: partition %q: alpha %q is not a number", ErrInvalidArgument, spec, arg)
		}
		p = Partition{Kind: KindDirichlet, Alpha: a}
		if name == "dirichlet-equal" {
			p.Kind = KindDirichletEqual
		}
		if err := p.Validate(); err != nil {
			return Partition{}, fmt.Errorf("partition %q: %w", spec, err)
		}
		return p, nil
	default:
		return Partition{}, fmt.Errorf("%w: partition %q: unknown kind (want iid, dirichlet:ALPHA, dirichlet-equal:ALPHA or natural)", ErrInvalidArgument, spec)
	}
	if hasArg {
		return Partition{}, fmt.Errorf("%w: partition %q: %s takes no argument", ErrInvalidArgument, spec, name)
	}
	return p, nil
}

// String returns the spec ParsePartition accepts: ParsePartition(p.String()) == p.
func (p Partition) String() string {
	switch p.Kind {
	case KindIID:
		if p.weights != "" {
			return "iid:" + p.weights
		}
		return "iid"
	case KindNatural:
		return "natural"
	case KindDirichlet:
		return "dirichlet:" + strconv.FormatFloat(p.Alpha, 'g', -1, 64)
	case KindDirichletEqual:
		return "dirichlet-equal:" + strconv.FormatFloat(p.Alpha, 'g', -1, 64)
	}
	return fmt.Sprintf("PartitionKind(%d)", p.Kind)
}

// Validate reports whether p is a known kind with valid parameters.
func (p Partition) Validate() error {
	switch p.Kind {
	case KindIID, KindNatural:
		return nil
	case KindDirichlet, KindDirichletEqual:
		if !(p.Alpha > 0) || math.IsInf(p.Alpha, 1) {
			return fmt.Errorf("%w: dirichlet alpha %v must be a positive finite number", ErrInvalidArgument, p.Alpha)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown partition kind %d", ErrInvalidArgument, p.Kind)
}

// Samples describes the samples to partition. IID needs only the count;
// Dirichlet needs Labels and Classes; Natural needs Groups.
type Samples struct {
	N       int      // number of samples; 0 means len(Labels), else len(Groups)
	Labels  []int    // class of each sample, in [0, Classes)
	Classes int      // number of classes; 0 means max(Labels)+1
	Groups  []string // group (speaker, writer) of each sample
}

func (s Samples) count() (int, error) {
	n := s.N
	for _, l := range []int{len(s.Labels), len(s.Groups)} {
		if l == 0 {
			continue
		}
		if n == 0 {
			n = l
		}
		if l != n {
			return 0, fmt.Errorf("%w: samples: N=%d, %d labels, %d groups disagree", ErrInvalidArgument, s.N, len(s.Labels), len(s.Groups))
		}
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: samples: N=%d", ErrInvalidArgument, n)
	}
	return n, nil
}

// Split partitions s into k non-empty parts with p, seeded by seed (Natural
// ignores the seed). It returns an error, never panics, on bad input: k < 1,
// fewer samples than parts, missing labels or groups for the kind, or (for
// natural) fewer groups than parts.
func (p Partition) Split(s Samples, k int, seed uint64) ([][]int, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	n, err := s.count()
	if err != nil {
		return nil, err
	}
	if k < 1 || n < k {
		return nil, fmt.Errorf("%w: %s: cannot split %d samples into %d non-empty parts", ErrInvalidArgument, p, n, k)
	}
	switch p.Kind {
	case KindDirichlet, KindDirichletEqual:
		if len(s.Labels) == 0 {
			return nil, fmt.Errorf("%w: %s: needs labels", ErrInvalidArgument, p)
		}
		classes := s.Classes
		if classes == 0 {
			classes = slices.Max(s.Labels) + 1
		}
		if p.Kind == KindDirichletEqual {
			return DirichletEqual(s.Labels, classes, k, p.Alpha, seed)
		}
		return Dirichlet(s.Labels, classes, k, p.Alpha, seed)
	case KindNatural:
		if len(s.Groups) == 0 {
			return nil, fmt.Errorf("%w: %s: needs groups", ErrInvalidArgument, p)
		}
		parts := Natural(s.Groups, k)
		for j, part := range parts {
			if len(part) == 0 {
				return nil, fmt.Errorf("%w: %s: part %d of %d is empty (fewer groups than parts)", ErrInvalidArgument, p, j, k)
			}
		}
		return parts, nil
	}
	if w := p.Weights(); w != nil {
		if len(w) != k {
			return nil, fmt.Errorf("%w: %s: %d part sizes for %d parts", ErrInvalidArgument, p, len(w), k)
		}
		return SizedIID(n, w, seed)
	}
	return IID(n, k, seed), nil
}

// SizedIID splits the indices 0..n-1 uniformly at random into len(weights)
// parts whose sizes are proportional to weights (largest remainder, ties to
// the lower index), each of at least one sample. Each part is sorted
// ascending. The result depends only on the arguments. Errors (wrapping
// ErrInvalidArgument): no weights, a weight not positive and finite, fewer
// samples than parts.
func SizedIID(n int, weights []float64, seed uint64) ([][]int, error) {
	k := len(weights)
	if k < 1 || n < k {
		return nil, fmt.Errorf("%w: sized iid: cannot split %d samples into %d non-empty parts", ErrInvalidArgument, n, k)
	}
	var sum float64
	for _, w := range weights {
		if !(w > 0) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("%w: sized iid: part size %v is not a positive finite number", ErrInvalidArgument, w)
		}
		sum += w
	}
	// Every part gets one sample; the other n−k are dealt by weight, largest remainder first.
	rest := n - k
	sizes := make([]int, k)
	type rem struct {
		frac float64
		j    int
	}
	rems := make([]rem, k)
	left := rest
	for j, w := range weights {
		exact := float64(rest) * w / sum
		sizes[j] = int(math.Floor(exact))
		left -= sizes[j]
		rems[j] = rem{exact - math.Floor(exact), j}
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return cmp.Compare(b.frac, a.frac) })
	for i := 0; i < left; i++ {
		sizes[rems[i%k].j]++
	}
	for j := range sizes {
		sizes[j]++
	}
	return dealShuffled(n, sizes, seed), nil
}
