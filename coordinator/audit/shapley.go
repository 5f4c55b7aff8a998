package audit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
)

// Coalition is a set of players: bit i is player i.
type Coalition uint64

// Has reports whether player i is in c.
func (c Coalition) Has(i int) bool { return c&(1<<uint(i)) != 0 }

// Size is the number of players in c.
func (c Coalition) Size() int { return bits.OnesCount64(uint64(c)) }

// All is the coalition of players 0..n−1.
func All(n int) Coalition {
	if n >= 64 {
		return ^Coalition(0)
	}
	return Coalition(1)<<uint(n) - 1
}

// Value is what a coalition achieves: the final validation loss (lower is better) and accuracy.
type Value struct {
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
}

// ValueFunc evaluates a coalition. Solve calls it once per distinct coalition, in a deterministic
// order, and never concurrently.
type ValueFunc func(ctx context.Context, c Coalition) (Value, error)

// Method is how Shapley values are computed.
type Method string

const (
	// MethodAuto is exact up to MaxAutoExact players, sampled beyond.
	MethodAuto Method = ""
	// MethodExact evaluates every coalition (at most MaxExact players).
	MethodExact Method = "exact"
	// MethodSampled samples permutations with truncation.
	MethodSampled Method = "sampled"
)

// Bounds on the players of a game.
const (
	// MaxPlayers is the most players a game can have (a Coalition is 64 bits).
	MaxPlayers = 64
	// MaxAutoExact is the most players MethodAuto computes exactly: 2^8 = 256 coalitions.
	MaxAutoExact = 8
	// MaxExact is the most players MethodExact accepts: 2^20 coalitions.
	MaxExact = 20
	// DefaultPermutations is how many permutations MethodSampled draws by default.
	DefaultPermutations = 50
	// DefaultTolerance is the default truncation tolerance of MethodSampled.
	DefaultTolerance = 0.01
	// MaxRepeats is the most repeats of the retrainings RunRepeated and Combine take.
	MaxRepeats = 16
)

// Errors of Solve and Compare.
var (
	ErrPlayers    = errors.New("audit: number of players out of range")
	ErrMethod     = errors.New("audit: unknown method")
	ErrOptions    = errors.New("audit: invalid options")
	ErrLength     = errors.New("audit: vectors of different lengths")
	ErrNotANumber = errors.New("audit: value is not a finite number")
)

// Options configure Solve. Zero values mean the defaults.
type Options struct {
	Method Method
	// Permutations is how many orderings MethodSampled draws (default DefaultPermutations).
	Permutations int
	// Tolerance truncates a sampled permutation (TMC-Shapley's rule): once the utility of its
	// prefix is within Tolerance × |u(N)| of the grand coalition's, the remaining players'
	// marginals are taken as 0 and their coalitions are not evaluated. Default DefaultTolerance;
	// negative: never truncate.
	Tolerance float64
	// Seed seeds the permutations.
	Seed uint64
	// Progress, if set, is called after every evaluation.
	Progress func(Progress)
}

// Progress reports how far Solve is.
type Progress struct {
	// Evaluations is the distinct coalitions evaluated so far.
	Evaluations int `json:"evaluations"`
	// Done and Total count coalitions (exact) or permutations (sampled, after the grand
	// coalition and its leave-one-out coalitions).
	Done  int `json:"done"`
	Total int `json:"total"`
	// Repeat is which of Repeats runs of the retrainings this is (RunRepeated; 0 for Solve).
	Repeat  int `json:"repeat,omitempty"`
	Repeats int `json:"repeats,omitempty"`
}

// Result is a game's attributions, per player, in the utility's units (loss reduction; for the
// accuracy fields, accuracy gained).
type Result struct {
	Players int    `json:"players"`
	Method  Method `json:"method"`
	// Permutations and Truncated are the sampled orderings and how many of them were cut short.
	Permutations int `json:"permutations,omitempty"`
	Truncated    int `json:"truncated,omitempty"`
	Evaluations  int `json:"evaluations"`
	// Empty and Grand are the values of ∅ and of every player together.
	Empty Value `json:"empty"`
	Grand Value `json:"grand"`
	// LOO[i] = loss(N \ {i}) − loss(N), LOOAccuracy[i] = acc(N) − acc(N \ {i}).
	LOO         []float64 `json:"loo"`
	LOOAccuracy []float64 `json:"loo_accuracy"`
	// Shapley, with its standard error (0 when exact), and the Shapley value of accuracy.
	Shapley         []float64 `json:"shapley"`
	ShapleySE       []float64 `json:"shapley_se"`
	ShapleyAccuracy []float64 `json:"shapley_accuracy"`
	// ShapleyAccuracySE is the accuracy's standard error across repeats (Combine; nil for one run).
	ShapleyAccuracySE []float64 `json:"shapley_accuracy_se,omitempty"`
	// Repeats, for a Combine of several runs of the retrainings: how many, each run's Shapley
	// values (loss and accuracy), and how well the runs agree with each other.
	Repeats               int         `json:"repeats,omitempty"`
	RepeatShapley         [][]float64 `json:"repeat_shapley,omitempty"`
	RepeatShapleyAccuracy [][]float64 `json:"repeat_shapley_accuracy,omitempty"`
	Agreement             *Agreement  `json:"agreement,omitempty"`
}

type solver struct {
	v     ValueFunc
	cache map[Coalition]Value
	opt   Options
	done  int
	total int
}

func (s *solver) value(ctx context.Context, c Coalition) (Value, error) {
	if x, ok := s.cache[c]; ok {
		return x, nil
	}
	if err := ctx.Err(); err != nil {
		return Value{}, err
	}
	x, err := s.v(ctx, c)
	if err != nil {
		return Value{}, fmt.Errorf("coalition %b: %w", uint64(c), err)
	}
	if math.IsNaN(x.Loss) || math.IsInf(x.Loss, 0) || math.IsNaN(x.Accuracy) || math.IsInf(x.Accuracy, 0) {
		return Value{}, fmt.Errorf("coalition %b: loss %v, accuracy %v: %w", uint64(c), x.Loss, x.Accuracy, ErrNotANumber)
	}
	s.cache[c] = x
	s.report()
	return x, nil
}

func (s *solver) report() {
	if s.opt.Progress != nil {
		s.opt.Progress(Progress{Evaluations: len(s.cache), Done: s.done, Total: s.total})
	}
}

// Solve computes the leave-one-out and Shapley values of the n-player game v.
func Solve(ctx context.Context, n int, v ValueFunc, opt Options) (*Result, error) {
	if n < 1 || n > MaxPlayers {
		return nil, fmt.Errorf("%w: %d players, want 1 to %d", ErrPlayers, n, MaxPlayers)
	}
	method := opt.Method
	switch method {
	case MethodAuto:
		method = MethodSampled
		if n <= MaxAutoExact {
			method = MethodExact
		}
	case MethodExact:
		if n > MaxExact {
			return nil, fmt.Errorf("%w: exact Shapley values of %d players need 2^%d retrainings; at most %d players (use sampled)", ErrPlayers, n, n, MaxExact)
		}
	case MethodSampled:
	default:
		return nil, fmt.Errorf("%w %q (want exact or sampled)", ErrMethod, opt.Method)
	}
	if opt.Permutations == 0 {
		opt.Permutations = DefaultPermutations
	}
	if opt.Tolerance == 0 {
		opt.Tolerance = DefaultTolerance
	}
	if opt.Permutations < 1 || opt.Permutations > 1_000_000 || math.IsNaN(opt.Tolerance) || math.IsInf(opt.Tolerance, 0) {
		return nil, fmt.Errorf("%w: permutations %d (want 1 to 1000000), tolerance %v (want finite)", ErrOptions, opt.Permutations, opt.Tolerance)
	}
	s := &solver{v: v, cache: map[Coalition]Value{}, opt: opt}
	res := &Result{Players: n, Method: method,
		LOO: make([]float64, n), LOOAccuracy: make([]float64, n),
		Shapley: make([]float64, n), ShapleySE: make([]float64, n), ShapleyAccuracy: make([]float64, n)}
	var err error
	if method == MethodExact {
		err = s.exact(ctx, n, res)
	} else {
		err = s.sampled(ctx, n, res)
	}
	if err != nil {
		return nil, err
	}
	all := All(n)
	res.Empty, res.Grand = s.cache[0], s.cache[all]
	for i := 0; i < n; i++ {
		without := s.cache[all&^(1<<uint(i))]
		res.LOO[i] = without.Loss - res.Grand.Loss
		res.LOOAccuracy[i] = res.Grand.Accuracy - without.Accuracy
	}
	res.Evaluations = len(s.cache)
	return res, nil
}

// exact evaluates all 2^n coalitions in increasing order and weighs every marginal by
// |S|!(n−|S|−1)!/n! = 1/(n·C(n−1,|S|)).
func (s *solver) exact(ctx context.Context, n int, res *Result) error {
	s.total = 1 << uint(n)
	vals := make([]Value, s.total)
	for c := 0; c < s.total; c++ {
		x, err := s.value(ctx, Coalition(c))
		if err != nil {
			return err
		}
		vals[c] = x
		s.done = c + 1
	}
	s.report()
	w := make([]float64, n) // w[k] = 1/(n·C(n−1,k))
	for k := 0; k < n; k++ {
		binom := 1.0
		for j := 1; j <= k; j++ {
			binom = binom * float64(n-1-k+j) / float64(j)
		}
		w[k] = 1 / (float64(n) * binom)
	}
	for c := 0; c < s.total; c++ {
		k := Coalition(c).Size()
		for i := 0; i < n; i++ {
			if Coalition(c).Has(i) {
				continue
			}
			with := vals[c|1<<uint(i)]
			// u(S∪i) − u(S) = loss(S) − loss(S∪i); accuracy gained the other way round.
			res.Shapley[i] += w[k] * (vals[c].Loss - with.Loss)
			res.ShapleyAccuracy[i] += w[k] * (with.Accuracy - vals[c].Accuracy)
		}
	}
	return nil
}

// sampled draws opt.Permutations orderings from a PCG seeded with opt.Seed and averages each
// player's marginals; a permutation stops (the rest count 0) once its prefix's utility is within
// the tolerance of the grand coalition's. The grand coalition, ∅ and the leave-one-out coalitions
// are evaluated first.
func (s *solver) sampled(ctx context.Context, n int, res *Result) error {
	all := All(n)
	s.total = s.opt.Permutations
	empty, err := s.value(ctx, 0)
	if err != nil {
		return err
	}
	grand, err := s.value(ctx, all)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if _, err := s.value(ctx, all&^(1<<uint(i))); err != nil {
			return err
		}
	}
	uGrand := empty.Loss - grand.Loss
	tol := s.opt.Tolerance * math.Abs(uGrand)
	rng := rand.New(rand.NewPCG(s.opt.Seed, 0x5ba91e))
	// Welford's running mean and sum of squared deviations of each player's loss marginals.
	mean, m2 := make([]float64, n), make([]float64, n)
	accMean := make([]float64, n)
	for p := 0; p < s.opt.Permutations; p++ {
		perm := rng.Perm(n)
		prefix, prev := Coalition(0), empty
		truncated := false
		for _, i := range perm {
			var dLoss, dAcc float64
			if !truncated && s.opt.Tolerance >= 0 && math.Abs(uGrand-(empty.Loss-prev.Loss)) < tol {
				truncated = true
				res.Truncated++
			}
			prefix |= 1 << uint(i)
			if !truncated {
				cur, err := s.value(ctx, prefix)
				if err != nil {
					return err
				}
				dLoss, dAcc = prev.Loss-cur.Loss, cur.Accuracy-prev.Accuracy
				prev = cur
			}
			k := float64(p + 1)
			d := dLoss - mean[i]
			mean[i] += d / k
			m2[i] += d * (dLoss - mean[i])
			accMean[i] += (dAcc - accMean[i]) / k
		}
		s.done = p + 1
		s.report()
	}
	m := float64(s.opt.Permutations)
	for i := 0; i < n; i++ {
		res.Shapley[i], res.ShapleyAccuracy[i] = mean[i], accMean[i]
		if m > 1 {
			res.ShapleySE[i] = math.Sqrt(m2[i] / (m - 1) / m)
		}
	}
	res.Permutations = s.opt.Permutations
	return nil
}
