package consensus

import (
	"math/bits"
	"sort"
)

// Allocate splits budget among weights in proportion, in integers, with the largest-remainder
// rule: each key first gets floor(budget·w/W) (W = Σw), then the budget left over (fewer units
// than keys with a non-zero remainder) goes one unit each to the keys with the largest remainders
// budget·w mod W, ties broken by the smaller key. The payouts sum exactly to budget when W > 0;
// when W = 0 nothing is allocated (the caller carries the budget over). Keys with a zero payout are
// omitted. Products are computed in 128 bits, so any uint64 budget and weights work; Allocate
// returns ErrOverflow only when Σw exceeds 2^64-1.
func Allocate(budget uint64, weights map[string]uint64) (map[string]uint64, error) {
	keys := make([]string, 0, len(weights))
	for k := range weights {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ws := make([]Weight, len(keys))
	for i, k := range keys {
		ws[i] = Weight{Contributor: k, Weight: weights[k]}
	}
	amounts, err := allocate(budget, ws)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(keys))
	for i, a := range amounts {
		if a > 0 {
			out[keys[i]] = a
		}
	}
	return out, nil
}

// allocate is Allocate over weights sorted by contributor; it returns amounts aligned with ws.
func allocate(budget uint64, ws []Weight) ([]uint64, error) {
	var total uint64
	for _, w := range ws {
		var c uint64
		total, c = bits.Add64(total, w.Weight, 0)
		if c != 0 {
			return nil, errf(ErrOverflow, "sum of weights exceeds 2^64-1")
		}
	}
	out := make([]uint64, len(ws))
	if total == 0 || budget == 0 {
		return out, nil
	}
	rems := make([]uint64, len(ws))
	var given uint64
	for i, w := range ws {
		hi, lo := bits.Mul64(budget, w.Weight)
		// budget·w < budget·total ≤ 2^64·total, so hi < total and Div64 cannot panic.
		q, r := bits.Div64(hi, lo, total)
		out[i], rems[i] = q, r
		given += q
	}
	left := budget - given // < number of non-zero remainders
	if left == 0 {
		return out, nil
	}
	order := make([]int, len(ws))
	for i := range order {
		order[i] = i
	}
	// ws is sorted by contributor, so a stable sort by remainder breaks ties by the smaller key.
	sort.SliceStable(order, func(a, b int) bool { return rems[order[a]] > rems[order[b]] })
	for _, i := range order[:left] {
		out[i]++
	}
	return out, nil
}

// checkWeights validates ScoreCommit weights: sorted, unique, contributors of the cohort.
func checkWeights(field string, ws []Weight, inCohort map[string]bool) error {
	if err := checkList(field, len(ws), false); err != nil {
		return err
	}
	var total uint64
	for i, w := range ws {
		if err := checkName(field+" contributor", w.Contributor, true); err != nil {
			return err
		}
		if i > 0 && ws[i-1].Contributor >= w.Contributor {
			return errf(ErrInvalid, "%s not sorted and unique at %q", field, w.Contributor)
		}
		if !inCohort[w.Contributor] {
			return errf(ErrNotFound, "%s contributor %q is not in the cohort", field, w.Contributor)
		}
		var c uint64
		total, c = bits.Add64(total, w.Weight, 0)
		if c != 0 {
			return errf(ErrOverflow, "%s: sum of weights exceeds 2^64-1", field)
		}
	}
	return nil
}

// roundBudget is the budget of round n of pool p: the base pool/rounds of every round since the
// last scored one (skipped rounds carry their base forward), the carry of unpaid budgets, and on the
// last round the remainder pool mod rounds, so that a pool is paid out exactly by its last round.
// It never exceeds what the pool has left.
func roundBudget(p *Pool, n uint32) uint64 {
	base := p.Total / uint64(p.Rounds)
	b := addSat(mulSat(base, uint64(n-p.LastScored)), p.Carry)
	if n >= p.Rounds {
		b = addSat(b, p.Total%uint64(p.Rounds))
	}
	return min(b, p.Remaining())
}

func (s *State) scoreCommit(b *ScoreCommitBody) (Result, error) {
	r, err := s.round(b.Cohort, b.Round)
	if err != nil {
		return Result{}, err
	}
	res := Result{ID: uint64(r.Number), Cohort: r.Cohort}
	if r.Scored {
		// Idempotent per round: a second commit (any request ID, any weights) changes nothing.
		res.Amount, res.Status, res.Duplicate = r.Paid, "scored", true
		return res, nil
	}
	if r.Status != RoundClosed {
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d is %s: only a closed round is scored", r.Cohort, r.Number, r.Status)
	}
	pool := s.pools[r.Cohort]
	if r.Number <= pool.LastScored {
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d: rounds are scored in order, last scored %d",
			r.Cohort, r.Number, pool.LastScored)
	}
	inCohort := map[string]bool{}
	for _, m := range s.cohorts[r.Cohort].Members {
		for _, d := range m.Contributors {
			inCohort[d.Name] = true
		}
	}
	if err := checkWeights("data weights", b.Data, inCohort); err != nil {
		return Result{}, err
	}
	if err := checkWeights("compute weights", b.Compute, inCohort); err != nil {
		return Result{}, err
	}
	if err := checkInfluence(b.Influence, inCohort); err != nil {
		return Result{}, err
	}
	if err := checkFlags(b.Flags, inCohort); err != nil {
		return Result{}, err
	}
	if err := checkName("score note", b.Note, false); err != nil {
		return Result{}, err
	}
	budget := roundBudget(pool, r.Number)
	hi, lo := bits.Mul64(budget, DataShareBP)
	dataBudget, _ := bits.Div64(hi, lo, 10000)
	computeBudget := budget - dataBudget
	data, _ := allocate(dataBudget, b.Data) // cannot fail: weights checked above
	compute, _ := allocate(computeBudget, b.Compute)

	earned := map[string][2]uint64{}
	for i, w := range b.Data {
		e := earned[w.Contributor]
		e[0] = data[i]
		earned[w.Contributor] = e
	}
	for i, w := range b.Compute {
		e := earned[w.Contributor]
		e[1] = compute[i]
		earned[w.Contributor] = e
	}
	names := make([]string, 0, len(earned))
	for n := range earned {
		names = append(names, n)
	}
	sort.Strings(names)
	// Every sum is checked before anything changes: data + compute ≤ budget ≤ what the pool has
	// left, and every balance ≤ the treasury's Funded, so none can overflow unless the state is
	// inconsistent, in which case the commit is refused rather than wrapped around.
	var paid uint64
	for _, n := range names {
		e := earned[n]
		sum, c1 := bits.Add64(e[0], e[1], 0)
		_, c2 := bits.Add64(s.balances[n], sum, 0)
		var c3 uint64
		paid, c3 = bits.Add64(paid, sum, 0)
		if c1|c2|c3 != 0 || paid > budget {
			return Result{}, errf(ErrOverflow, "cohort %d round %d: payouts to %q overflow", r.Cohort, r.Number, n)
		}
	}
	paid = 0
	for _, n := range names {
		e := earned[n]
		if e[0]+e[1] == 0 {
			continue
		}
		s.byCohort[r.Cohort] = append(s.byCohort[r.Cohort], len(s.payouts))
		s.payouts = append(s.payouts, Payout{Cohort: r.Cohort, Round: r.Number, Contributor: n, Data: e[0], Compute: e[1]})
		s.balances[n] += e[0] + e[1]
		paid += e[0] + e[1]
	}
	pool.Paid += paid
	pool.Carry = budget - paid
	pool.LastScored = r.Number
	pool.RoundsPaid++
	if r.Number >= pool.Rounds {
		// The last round: what nobody earned goes back to the treasury (≤ Funded, as it came
		// from there), not into a pool that no round can pay from any more.
		if rest := pool.Remaining(); rest > 0 {
			pool.Returned += rest
			pool.Carry = 0
			s.treasury.Balance += rest
		}
	}
	r.Scored, r.Budget, r.Paid = true, budget, paid
	r.Influence, r.Flags, r.Metrics, r.ScoreNote = b.Influence, b.Flags, b.Metrics, b.Note
	res.Amount, res.Status = paid, "scored"
	return res, nil
}

// checkInfluence validates ScoreCommit influence values: sorted, unique, contributors of the cohort.
func checkInfluence(xs []Influence, inCohort map[string]bool) error {
	if err := checkList("influence", len(xs), false); err != nil {
		return err
	}
	var credit uint64
	for i, x := range xs {
		if credit += x.Credit; credit < x.Credit || credit > CreditScale {
			return errf(ErrInvalid, "influence credits sum past %d at %q", uint64(CreditScale), x.Contributor)
		}
		if i > 0 && xs[i-1].Contributor >= x.Contributor {
			return errf(ErrInvalid, "influence not sorted and unique at %q", x.Contributor)
		}
		if !inCohort[x.Contributor] {
			return errf(ErrNotFound, "influence contributor %q is not in the cohort", x.Contributor)
		}
	}
	return nil
}

// checkFlags validates ScoreCommit flags: sorted and unique by (contributor, kind), bounded strings.
func checkFlags(fs []Flag, inCohort map[string]bool) error {
	if err := checkList("flags", len(fs), false); err != nil {
		return err
	}
	for i, f := range fs {
		if !inCohort[f.Contributor] {
			return errf(ErrNotFound, "flag contributor %q is not in the cohort", f.Contributor)
		}
		if err := checkName("flag kind", f.Kind, true); err != nil {
			return err
		}
		if err := checkName("flag detail", f.Detail, false); err != nil {
			return err
		}
		if i > 0 {
			p := fs[i-1]
			if p.Contributor > f.Contributor || (p.Contributor == f.Contributor && p.Kind >= f.Kind) {
				return errf(ErrInvalid, "flags not sorted and unique at %q/%q", f.Contributor, f.Kind)
			}
		}
	}
	return nil
}
