package consensus

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	mrand "math/rand"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/quick"
)

// naiveAllocate recomputes the largest-remainder allocation with big integers.
func naiveAllocate(budget uint64, weights map[string]uint64) map[string]uint64 {
	total := new(big.Int)
	for _, w := range weights {
		total.Add(total, new(big.Int).SetUint64(w))
	}
	out := map[string]uint64{}
	if total.Sign() == 0 {
		return out
	}
	type entry struct {
		name string
		q    uint64
		r    *big.Int
	}
	var es []entry
	given := new(big.Int)
	for n, w := range weights {
		p := new(big.Int).Mul(new(big.Int).SetUint64(budget), new(big.Int).SetUint64(w))
		q, r := new(big.Int).QuoRem(p, total, new(big.Int))
		es = append(es, entry{n, q.Uint64(), r})
		given.Add(given, q)
	}
	sort.Slice(es, func(i, j int) bool {
		if c := es[i].r.Cmp(es[j].r); c != 0 {
			return c > 0
		}
		return es[i].name < es[j].name
	})
	left := new(big.Int).Sub(new(big.Int).SetUint64(budget), given).Uint64()
	for i := range es {
		v := es[i].q
		if uint64(i) < left {
			v++
		}
		if v > 0 {
			out[es[i].name] = v
		}
	}
	return out
}

func TestAllocateTable(t *testing.T) {
	cases := []struct {
		budget  uint64
		weights map[string]uint64
		want    map[string]uint64
	}{
		{100, map[string]uint64{"a": 1, "b": 1, "c": 1}, map[string]uint64{"a": 34, "b": 33, "c": 33}},
		{100, map[string]uint64{"c": 1, "b": 1, "a": 1}, map[string]uint64{"a": 34, "b": 33, "c": 33}},
		{10, map[string]uint64{"a": 0, "b": 0}, map[string]uint64{}},
		{0, map[string]uint64{"a": 5}, map[string]uint64{}},
		{7, map[string]uint64{"a": 1, "b": 2, "z": 4}, map[string]uint64{"a": 1, "b": 2, "z": 4}},
		{2, map[string]uint64{"a": 1, "b": 1, "c": 1}, map[string]uint64{"a": 1, "b": 1}},
		{1, map[string]uint64{"x": 3, "y": 5}, map[string]uint64{"y": 1}},
		{math.MaxUint64, map[string]uint64{"a": math.MaxUint64 / 2, "b": math.MaxUint64 / 2},
			map[string]uint64{"a": math.MaxUint64/2 + 1, "b": math.MaxUint64 / 2}},
		{5, nil, map[string]uint64{}},
	}
	for i, tc := range cases {
		got, err := Allocate(tc.budget, tc.weights)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("case %d: Allocate(%d, %v) = %v, want %v", i, tc.budget, tc.weights, got, tc.want)
		}
	}
	if _, err := Allocate(10, map[string]uint64{"a": math.MaxUint64, "b": 1}); !errors.Is(err, ErrOverflow) {
		t.Fatalf("weights summing past 2^64: err = %v, want ErrOverflow", err)
	}
}

// TestAllocateQuick checks Allocate against the big-integer recomputation and its invariants:
// payouts sum exactly to the budget, nobody gets more than its proportional share + 1 or less
// than its floor, and ties go to the smaller name.
func TestAllocateQuick(t *testing.T) {
	cfg := &quick.Config{MaxCount: 2000, Rand: mrand.New(mrand.NewSource(1))} // seeded: reproducible
	if testing.Short() {
		cfg.MaxCount = 500
	}
	f := func(budget uint64, raw []uint16, small bool, shift uint8) bool {
		if small {
			budget %= 1000
		}
		weights := map[string]uint64{}
		var total big.Int
		for i, w := range raw {
			if i >= 40 {
				break
			}
			v := uint64(w) << (shift % 40)
			weights[fmt.Sprintf("c%03d", (i*7)%53)] = v
		}
		for _, v := range weights {
			total.Add(&total, new(big.Int).SetUint64(v))
		}
		got, err := Allocate(budget, weights)
		if err != nil {
			t.Logf("error %v", err)
			return false
		}
		want := naiveAllocate(budget, weights)
		if !reflect.DeepEqual(got, want) {
			t.Logf("budget %d weights %v: got %v want %v", budget, weights, got, want)
			return false
		}
		var sum uint64
		for n, v := range got {
			sum += v
			// floor(share) <= v <= floor(share)+1
			share := new(big.Int).Mul(new(big.Int).SetUint64(budget), new(big.Int).SetUint64(weights[n]))
			share.Quo(share, &total)
			if d := new(big.Int).Sub(new(big.Int).SetUint64(v), share); d.Sign() < 0 || d.Cmp(big.NewInt(1)) > 0 {
				t.Logf("%s got %d, share %s", n, v, share)
				return false
			}
		}
		if total.Sign() > 0 && sum != budget || total.Sign() == 0 && sum != 0 {
			t.Logf("sum %d, budget %d, total weight %s", sum, budget, &total)
			return false
		}
		// Deterministic regardless of map iteration order.
		again, _ := Allocate(budget, weights)
		return reflect.DeepEqual(got, again)
	}
	if err := quick.Check(f, cfg); err != nil {
		t.Fatal(err)
	}
}

// TestLedgerConservation drives whole cohorts through seeded random score commits and checks the
// ledger against a naive recomputation: every payout sums to what was paid, the pool is paid out
// exactly once its last round is scored with someone earning, and replays change nothing.
func TestLedgerConservation(t *testing.T) {
	iters := 60
	if testing.Short() {
		iters = 15
	}
	for seed := uint64(1); seed <= uint64(iters); seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { ledgerScenario(t, seed) })
	}
}

func ledgerScenario(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	s := NewState()
	now := int64(1000)
	req := map[string]uint64{}
	apply := func(name string, b Body) Result {
		req[name]++
		return mustApply(t, s, now, name, req[name], b)
	}
	apply("c1", &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	nm := 2 + rng.IntN(4)
	var members []string
	for i := 0; i < nm; i++ {
		m := fmt.Sprintf("m%d", i)
		members = append(members, testID(m))
		apply(m, &RegisterBody{PublicKey: testPub(m), Name: m, Contributors: []string{m + "-x", m + "-y"}})
	}
	sort.Strings(members)
	rounds := uint32(1 + rng.IntN(8))
	pool := rng.Uint64N(1_000_000_007)
	extra := rng.Uint64N(1000)
	apply("c1", &FundBody{Amount: pool + extra + 1})
	apply("c1", &GrantBody{Member: testID("m0"), Votes: 1})
	apply("m0", &ProposeBody{Name: "p", Model: "mlp", Dataset: "d", Params: Hyperparams{Rounds: rounds, InnerSteps: 1},
		RewardPool: pool, QuorumBP: 2000, ThresholdBP: 5000, VotingPeriodMs: 1})
	if tr := s.Treasury(); tr.Reserved != pool || tr.Unreserved() != extra+1 {
		t.Fatalf("treasury after propose: %+v", tr)
	}
	apply("m0", &VoteBody{Proposal: 1, Yes: true})
	now++
	if r := apply("c1", &TallyBody{Proposal: 1}); r.Cohort != 1 {
		t.Fatalf("proposal did not pass: %+v", r)
	}
	if tr := s.Treasury(); tr.Reserved != 0 || tr.Balance != extra+1 || tr.Funded != pool+extra+1 {
		t.Fatalf("treasury after tally: %+v", tr)
	}
	for i := 0; i < nm; i++ {
		m := fmt.Sprintf("m%d", i)
		apply(m, &JoinBody{Cohort: 1, Contributors: []ContributorData{
			{Name: m + "-x", Fingerprint: []byte{byte(i), 1}, Samples: 10},
			{Name: m + "-y", Fingerprint: []byte{byte(i), 2}, Samples: 20}}})
	}
	var paidTotal uint64
	lastEarned := false
	hash := []byte("m0")
	for r := uint32(1); r <= rounds; r++ {
		apply("c1", &OpenRoundBody{Cohort: 1, Number: r, Participants: members,
			Slices: []SliceAssignment{{Start: 0, End: 10, Aggregator: testID("c1")}}, ModelHash: hash, Deadline: now + 10})
		hash = []byte(fmt.Sprintf("m%d", r))
		apply("c1", &CloseRoundBody{Cohort: 1, Round: r, ModelHash: hash})
		if rng.IntN(4) != 0 || r == rounds { // some rounds are skipped
			var data, compute []Weight
			for i := 0; i < nm; i++ {
				for _, sfx := range []string{"-x", "-y"} {
					m := fmt.Sprintf("m%d", i)
					w := Weight{Contributor: ContributorKey(testID(m), m+sfx)}
					if rng.IntN(3) != 0 {
						w.Weight = rng.Uint64N(1000)
					}
					if rng.IntN(2) == 0 {
						data = append(data, w)
					}
					cw := w
					cw.Weight = rng.Uint64N(50)
					compute = append(compute, cw)
				}
			}
			// Weights are sorted by contributor key (member ID, then name).
			byKey := func(a, b Weight) int { return strings.Compare(a.Contributor, b.Contributor) }
			slices.SortFunc(data, byKey)
			slices.SortFunc(compute, byKey)
			if r == rounds { // someone earns on the last round, in both parts
				data = append(data[:0], Weight{Contributor: ContributorKey(testID("m0"), "m0-x"), Weight: 1})
				compute[0].Weight++
			}
			budgetBefore := s.pools[1].Remaining()
			res := apply("c1", &ScoreCommitBody{Cohort: 1, Round: r, Data: data, Compute: compute})
			if res.Amount > budgetBefore {
				t.Fatalf("round %d paid %d with %d left", r, res.Amount, budgetBefore)
			}
			paidTotal += res.Amount
			// Replaying the commit under a fresh request ID is a no-op.
			before := s.Ledger()
			if again := apply("c1", &ScoreCommitBody{Cohort: 1, Round: r, Data: nil}); !again.Duplicate || again.Amount != res.Amount {
				t.Fatalf("second score commit of round %d: %+v", r, again)
			}
			if !reflect.DeepEqual(before, s.Ledger()) {
				t.Fatalf("second score commit of round %d changed the ledger", r)
			}
			lastEarned = r == rounds
		}
	}
	l := s.Ledger()
	var payoutSum, balanceSum uint64
	perContributor := map[string]uint64{}
	for _, p := range l.Payouts {
		payoutSum += p.Data + p.Compute
		perContributor[p.Contributor] += p.Data + p.Compute
	}
	for _, b := range l.Balances {
		balanceSum += b.Amount
		if perContributor[b.Contributor] != b.Amount {
			t.Fatalf("%s: balance %d, payouts %d", b.Contributor, b.Amount, perContributor[b.Contributor])
		}
	}
	p := l.Pools[0]
	if payoutSum != paidTotal || balanceSum != paidTotal || p.Paid != paidTotal {
		t.Fatalf("payouts %d, balances %d, pool paid %d, results %d", payoutSum, balanceSum, p.Paid, paidTotal)
	}
	// Conservation: what was funded is in the treasury, in the pools, or earned.
	var pooled uint64
	for _, p := range l.Pools {
		pooled += p.Total - p.Returned // what a finished pool did not pay went back to the treasury
	}
	if tr := l.Treasury; tr.Balance+pooled != tr.Funded || balanceSum > tr.Funded {
		t.Fatalf("treasury %+v, pools %d, balances %d: funds not conserved", tr, pooled, balanceSum)
	}
	if lastEarned && (p.Paid+p.Returned != pool || p.Remaining() != 0) {
		t.Fatalf("last round scored: paid %d and returned %d of pool %d (carry %d)", p.Paid, p.Returned, pool, p.Carry)
	}
}
