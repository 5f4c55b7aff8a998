// Package attribution turns what the validator measured in one round into the integer data and
// compute weights the ledger pays by (consensus.ScoreCommitBody). It is pure and deterministic: no
// clock, randomness or I/O, so that it is tested without sockets and the leader's decision can be
// recomputed from its inputs.
//
// # What is measured
//
// Let Δ_i = θ_t − θ_i be participant i's decoded pseudo-gradient (the sign convention of
// trainer.Worker.PseudoGradient: the model moves by −Δ), g_1..g_K the validation-loss gradients at
// θ_t on K disjoint validation micro-batches, and u the aggregate applied in the previous round.
// To first order, moving by −Δ_i changes the loss on micro-batch k by −⟨g_k, Δ_i⟩, so
// s_ik = ⟨g_k, Δ̂_i⟩ is the loss decrease i's update brings (positive is good), with Δ̂_i made robust:
//
//   - the component along u is removed (Δ̂ = Δ − (⟨Δ,u⟩/‖u‖²)·u): replaying the previous global
//     step earns nothing, whatever its validation alignment;
//   - Δ̂ is scaled down to the median update norm when longer: scaling an update up gains nothing;
//     an update longer than NormOutlier × the median earns nothing at all and is flagged "scaled";
//   - the influence recorded for i is the lower confidence bound LCB_i = mean_k s_ik −
//     Z·std_k(s_ik)/√K: noise, whose alignment with the validation gradient is small and
//     inconsistent across micro-batches, has an influence of ~nothing;
//   - i earns new credit in this round only while its influence is consistently positive across
//     rounds (trusted: the mean of its per-round LCBs, this one included, is positive; a member
//     whose first scored update raised the loss must clear Z standard errors instead —
//     label-flipped data hurts a young model and helps only once it is over-confident), only if
//     the leader put its update in the aggregate (a distrusted member is scored, so that trust can
//     come back, but the model did not get its update), and only if its record — its mean
//     influence over its rounds, this one's included — is at least MinCredit × the round's median
//     positive record (updates that barely move the loss are not a contribution; judged on the
//     record, not on this round's score alone, so an honest member whose update adds little in
//     a late round, when the model has learnt what its data teaches, keeps earning);
//   - its new credit is its mean score tempered, mean^Power (the tenth root by default: chosen on
//     ten audited cohorts and measured on two more, docs/figures.md), as a share of the round's:
//     each round's new credit sums to 1, recorded per contributor (consensus.Influence.Credit);
//   - and the round pays every participant that is not excluded (scaled, empty) and not a copy
//     by the credit it has earned so far, this round's included (Participant.Credit), whether or
//     not it is still trusted or in the aggregate: credit belongs to the contributor, not to one
//     update, so a member whose data helped in the early rounds, when the model was young, is
//     still paid in a later round where its update adds little to everyone else's or even, for a
//     label-skewed shard, seems to hurt at first order. Such a member earns no new credit, so its
//     share of a round falls as the others earn; a member that never earned is paid nothing.
//
// Why: first-order influence at θ_t measures what an update adds to the others' at the model the
// cohort has (leave-one-out's question), while what a contributor is worth — the Shapley value of
// retraining without it, cohort audit — averages over small coalitions too, where every shard is
// worth more and the shards are worth more alike. Paying the LCB round by round gave the one or two
// members whose data matched the validation split best most of the pool (the spread of an honest
// label-skewed update over the micro-batches is large: it helps on its classes' examples); the mean,
// tempered, and credit carried over rounds, bring the shares close to the retrainings' values
// without letting any planted kind earn.
//
// The per-round flag "negative-influence" is raised only when the update clearly raised the loss:
// the upper confidence bound mean + Z·std/√K is negative.
//
// A participant's reward weight is split among its contributors by their registered samples
// (contributors flagged as duplicates get none) and scaled to integers (WeightScale in total). The
// compute weight of a participant with a useful reward (at least MinUseful × the median positive
// reward: a tiny positive score from noise does not unlock it) is the samples its receipt claims,
// split the same way. The ledger then pays the round's budget by these weights with the
// largest-remainder rule (consensus.Allocate).
package attribution

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/cohortlab/cohort/consensus"
)

// Config tunes the scoring. Zero values mean the defaults.
type Config struct {
	// Z is the confidence multiplier of the lower bound; default 2.
	Z float64
	// NormOutlier: an update longer than this multiple of the median norm earns nothing; default 4.
	NormOutlier float64
	// DupCosine: updates at least this similar are one group; default 0.95.
	DupCosine float64
	// FingerprintCosine: updates of contributors that registered the same data fingerprint are one
	// group when at least this similar; default 0.2.
	FingerprintCosine float64
	// StaleCosine: an update at least this aligned with the previous global step is flagged
	// "stale" (it is scored on what remains after removing that component); default 0.9.
	StaleCosine float64
	// WeightScale is the sum of the integer data weights; default 1e12.
	WeightScale float64
	// MinUseful: a reward below this fraction of the median positive reward does not earn the
	// compute share (noise that happens to align a little is not useful work); default 0.1.
	MinUseful float64
	// MinCredit: a member whose record — the mean of its influence over its rounds, this one's
	// included — is below this fraction of the round's median positive record earns nothing
	// (updates that barely move the validation loss, as noise does when it happens to align a
	// little, are not a contribution); default 0.1.
	MinCredit float64
	// GateZ is the confidence multiplier of the across-rounds gate (Consistent over the member's
	// per-round lower bounds, this round's included); default 0: their mean must be positive.
	GateZ float64
	// Power tempers the credit: a group that earns is credited mean^Power; default 0.1.
	Power float64
}

func (c Config) withDefaults() Config {
	if c.Z == 0 {
		c.Z = 2
	}
	if c.NormOutlier == 0 {
		c.NormOutlier = 4
	}
	if c.DupCosine == 0 {
		c.DupCosine = 0.95
	}
	if c.FingerprintCosine == 0 {
		c.FingerprintCosine = 0.2
	}
	if c.StaleCosine == 0 {
		c.StaleCosine = 0.9
	}
	if c.WeightScale == 0 {
		c.WeightScale = 1e12
	}
	if c.MinUseful == 0 {
		c.MinUseful = 0.1
	}
	if c.MinCredit == 0 {
		c.MinCredit = 0.1
	}
	if c.Power == 0 {
		c.Power = 0.1
	}
	return c
}

// Participant is a cohort member whose update is scored.
type Participant struct {
	Member       string
	Order        uint32 // 1-based join order in the cohort: earlier wins a duplicate group
	Samples      uint64 // samples its receipt claims for the round
	Contributors []consensus.ContributorData
	// History holds its influence (LCB) in the earlier scored rounds it took part in.
	History []float64
	// LeftOut: the leader left its update out of the round's aggregate (it was distrusted). It
	// is scored, so that trust can come back, but earns nothing: the model did not get its update.
	LeftOut bool
	// Credit is what its contributors earned in the earlier scored rounds: the sum of their
	// Influence.Credit / consensus.CreditScale (each round's new credit sums to 1).
	Credit float64
}

// MemberScore is what scoring found for one participant (for logs and tests).
type MemberScore struct {
	Member     string
	Norm       float64 // ‖Δ_i‖
	CosPrev    float64 // cos(Δ_i, u)
	Mean, LCB  float64 // of its own clipped, de-staled scores
	Group      string  // the member its group is credited to
	GroupLCB   float64
	Reward     float64 // the group's mean score, for its credited member when it earns, else 0
	Excluded   string  // why it earns nothing regardless of its score, if so
	Contribute []string
}

// Result is a round's scoring: the ScoreCommit fields and the per-member detail.
type Result struct {
	Data      []consensus.Weight
	Compute   []consensus.Weight
	Influence []consensus.Influence
	Flags     []consensus.Flag
	Members   []MemberScore
}

// Score scores the participants found in sums (participants missing from sums are skipped: their
// update did not reach every aggregator).
func Score(sums Sums, parts []Participant, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	if err := sums.check(); err != nil {
		return Result{}, err
	}
	byMember := map[string]Participant{}
	for _, p := range parts {
		byMember[p.Member] = p
	}
	// The scored set: members with sums and a participant record, in member order.
	var idx []int
	for i, m := range sums.Members {
		if _, ok := byMember[m]; ok {
			idx = append(idx, i)
		}
	}
	n, K := len(idx), sums.K
	ms := make([]MemberScore, n)
	norms := make([]float64, n)
	for a, i := range idx {
		norms[a] = math.Sqrt(max(sums.NormSq[i], 0))
		ms[a].Member, ms[a].Norm = sums.Members[i], norms[a]
	}
	median := medianPositive(norms)
	scores := make([][]float64, n) // s_ik after de-staling and clipping
	fl := flags{}
	for a, i := range idx {
		m := &ms[a]
		s := make([]float64, K)
		c := 0.0
		if sums.UU > 0 {
			c = sums.UD[i] / sums.UU
			if norms[a] > 0 {
				m.CosPrev = sums.UD[i] / (norms[a] * math.Sqrt(sums.UU))
			}
		}
		scale := 1.0
		if norms[a] > median && norms[a] > 0 {
			scale = median / norms[a]
		}
		for k := 0; k < K; k++ {
			s[k] = scale * (sums.GD[i*K+k] - c*sums.GU[k])
		}
		scores[a] = s
		m.Mean, m.LCB = lcb(s, cfg.Z)
		switch {
		case norms[a] == 0:
			m.Excluded = "empty"
			fl.add(byMember[m.Member], "empty", "sent an all-zero update")
		case median > 0 && norms[a] > cfg.NormOutlier*median:
			m.Excluded = "scaled"
			fl.add(byMember[m.Member], "scaled", fmt.Sprintf("update %.0f× the median norm", norms[a]/median))
		}
		if m.CosPrev >= cfg.StaleCosine {
			fl.add(byMember[m.Member], "stale", fmt.Sprintf("update %.0f%% aligned with the previous global step", 100*m.CosPrev))
		}
	}

	// Duplicate groups: near-identical updates, or data registered as a copy of an earlier member's.
	uf := newUnionFind(n)
	ownerOf := map[string]int{} // contributor name → scored member index
	for a := range idx {
		for _, cd := range byMember[ms[a].Member].Contributors {
			ownerOf[cd.Name] = a
		}
	}
	cos := sums.cosine()
	cosine := func(a, b int) float64 { return cos(idx[a], idx[b]) }
	confirmed := map[string]bool{} // contributors whose registered duplicate the updates confirm
	for a := range idx {
		for _, cd := range byMember[ms[a].Member].Contributors {
			if b, ok := ownerOf[cd.DuplicateOf]; ok && cd.DuplicateOf != "" && (b == a || cosine(a, b) >= cfg.FingerprintCosine) {
				uf.union(a, b)
				confirmed[cd.Name] = true
			}
		}
		for b := a + 1; b < n; b++ {
			if cosine(a, b) >= cfg.DupCosine {
				uf.union(a, b)
			}
		}
	}
	groups := map[int][]int{}
	for a := range idx {
		r := uf.find(a)
		groups[r] = append(groups[r], a)
	}
	reward := make([]float64, n)
	for _, g := range groups {
		// Credited to the earliest registered member; scored once, as the mean of its members.
		head := g[0]
		for _, a := range g {
			if less(byMember[ms[a].Member], byMember[ms[head].Member]) {
				head = a
			}
		}
		var eligible []int
		for _, a := range g {
			if ms[a].Excluded == "" {
				eligible = append(eligible, a)
			}
		}
		gs := make([]float64, K)
		for _, a := range eligible {
			for k := range gs {
				gs[k] += scores[a][k] / float64(len(eligible))
			}
		}
		gmean, glcb := lcb(gs, cfg.Z)
		if math.IsNaN(glcb) || math.IsInf(glcb, 0) || math.IsNaN(gmean) || math.IsInf(gmean, 0) {
			glcb, gmean = 0, 0 // sums this large mean a broken partial: pay nothing rather than guess
		}
		for _, a := range g {
			ms[a].Group, ms[a].GroupLCB = ms[head].Member, glcb
			if a != head {
				fl.add(byMember[ms[a].Member], "duplicate", "duplicate of "+strings.Join(names(byMember[ms[head].Member]), ", "))
			}
		}
		if ms[head].Excluded == "" && len(eligible) > 0 && gmean > 0 {
			reward[head] = gmean
			ms[head].Reward = gmean
		}
	}

	// Weights per contributor.
	useful := cfg.MinUseful * medianPositive(reward)
	record := make([]float64, n) // each member's mean influence over its rounds, this one's included
	for a := range idx {
		p := byMember[ms[a].Member]
		record[a], _ = lcb(append(append([]float64(nil), p.History...), ms[a].LCB), 0)
	}
	recordFloor := cfg.MinCredit * medianPositive(record)
	fresh := make([]float64, n) // this round's new credit, before normalising
	payable := make([]bool, n)
	var freshSum float64
	var res Result
	dataW := map[string]float64{}
	computeW := map[string]uint64{}
	influence := map[string]int64{}
	for a := range idx {
		p := byMember[ms[a].Member]
		cs := creditable(p, confirmed)
		ms[a].Contribute = names(p)
		if 2*ms[a].Mean-ms[a].LCB < 0 { // the upper confidence bound: clearly raised it
			fl.add(p, "negative-influence", fmt.Sprintf("update raised the validation loss (%.3g)", ms[a].Mean))
		}
		for _, cd := range p.Contributors {
			switch {
			case confirmed[cd.Name]:
				fl.add(p, "duplicate", "duplicate of "+consensus.ContributorName(cd.DuplicateOf)+" (same data fingerprint)")
			case cd.DuplicateOf != "":
				fl.add(p, "fingerprint", "same data fingerprint as "+consensus.ContributorName(cd.DuplicateOf)+", but the updates differ: not grouped")
			}
			influence[cd.Name] = toFixed(ms[a].LCB)
		}
		ok := trusted(p.History, ms[a].LCB, cfg)
		if !ok && (reward[a] > 0 || p.Credit > 0) {
			fl.add(p, "inconsistent", "influence not consistently positive across rounds")
		}
		if !ok || p.LeftOut || (reward[a] > 0 && record[a] < recordFloor) {
			reward[a] = 0
			ms[a].Reward = 0
		}
		// Paid this round: a member not excluded (scaled, empty) and not a copy of another's, by
		// the credit it earned so far, whatever this round's score — also when it is no longer
		// trusted or was left out of this round's aggregate: it earns nothing new then, but what
		// its data taught the model while it earned is still in the model.
		payable[a] = ms[a].Excluded == "" && ms[a].Group == ms[a].Member && len(cs) > 0
		if reward[a] <= 0 || len(cs) == 0 {
			continue
		}
		isUseful := reward[a] >= useful
		fresh[a] = reward[a]
		if cfg.Power != 1 {
			fresh[a] = math.Pow(reward[a], cfg.Power)
		}
		freshSum += fresh[a]
		if !isUseful {
			continue
		}
		total, split := samplesSplit(cs)
		for _, cd := range cs {
			if total > 0 {
				computeW[cd.Name] += uint64(float64(p.Samples) * split(cd))
			} else {
				computeW[cd.Name] += p.Samples / uint64(len(cs))
			}
		}
	}
	// A member's credit: what it earned in the earlier rounds (each round's new credit sums to 1)
	// plus its share of this round's; the round pays its payable members by it.
	credit := map[string]uint64{}
	for a := range idx {
		p := byMember[ms[a].Member]
		cs := creditable(p, confirmed)
		share := 0.0
		if freshSum > 0 {
			share = fresh[a] / freshSum
		}
		_, split := samplesSplit(cs)
		for _, cd := range cs {
			if c := math.Floor(share * split(cd) * consensus.CreditScale); c >= 1 && c <= consensus.CreditScale {
				credit[cd.Name] = uint64(c)
			}
			if payable[a] && p.Credit+share > 0 {
				dataW[cd.Name] += (p.Credit + share) * split(cd)
			}
		}
	}
	var sum float64
	for _, v := range dataW {
		sum += v
	}
	for _, name := range sortedKeys(dataW) {
		f := math.Floor(dataW[name] / sum * cfg.WeightScale)
		if !(f >= 1 && f <= cfg.WeightScale) { // also NaN, when sum overflowed
			continue
		}
		res.Data = append(res.Data, consensus.Weight{Contributor: name, Weight: uint64(f)})
	}
	for _, name := range sortedKeys(computeW) {
		if computeW[name] > 0 {
			res.Compute = append(res.Compute, consensus.Weight{Contributor: name, Weight: computeW[name]})
		}
	}
	for _, name := range sortedKeys(influence) {
		res.Influence = append(res.Influence, consensus.Influence{Contributor: name, Value: influence[name], Credit: credit[name]})
	}
	res.Flags = fl.sorted()
	res.Members = ms
	return res, nil
}

// less orders participants by join order, then member ID.
func less(a, b Participant) bool {
	if a.Order != b.Order {
		return a.Order < b.Order
	}
	return a.Member < b.Member
}

// samplesSplit is how a member's weight is split among contributors cs: by registered samples,
// equally when none registered any.
func samplesSplit(cs []consensus.ContributorData) (total uint64, split func(consensus.ContributorData) float64) {
	for _, cd := range cs {
		total += cd.Samples
	}
	return total, func(cd consensus.ContributorData) float64 {
		if total == 0 {
			return 1 / float64(len(cs))
		}
		return float64(cd.Samples) / float64(total)
	}
}

// creditable are the contributors of p that may be paid: all but registered copies whose
// duplicate the updates confirmed.
func creditable(p Participant, confirmed map[string]bool) []consensus.ContributorData {
	var out []consensus.ContributorData
	for _, cd := range p.Contributors {
		if !confirmed[cd.Name] {
			out = append(out, cd)
		}
	}
	return out
}

func names(p Participant) []string {
	var out []string
	for _, cd := range p.Contributors {
		out = append(out, cd.Name)
	}
	return out
}

// trusted reports whether a member with influence history hist (oldest first) and influence x
// this round is paid this round: its influence is consistently positive across rounds
// (Consistent) with confidence GateZ — or Z, a harder bar, when its first scored update raised
// the validation loss. Honest data helps a young model (every honest contributor measured
// starts positive, however label-skewed its shard); label-flipped data hurts it at first and
// helps only later, once the model is over-confident: averaged over rounds, the two would pay it.
func trusted(hist []float64, x float64, cfg Config) bool {
	xs := append(append([]float64(nil), hist...), x)
	z := cfg.GateZ
	if xs[0] <= 0 {
		z = cfg.Z
	}
	return Consistent(xs, z)
}

// Consistent reports whether a member's influence over its rounds (oldest first, this round
// last) is consistently positive: the lower confidence bound across rounds, mean − z·std/√n, is
// positive (for one round: the value itself). An update that helps in one round and hurts in
// the others — label-flipped data helps an over-confident model's loss now and then, noise
// aligns by chance — earns nothing; an honest contributor's influence stays positive.
func Consistent(xs []float64, z float64) bool {
	_, low := lcb(xs, z)
	return low > 0
}

// lcb returns the mean and mean − z·std/√K of xs (sample standard deviation).
func lcb(xs []float64, z float64) (mean, low float64) {
	k := float64(len(xs))
	if k == 0 {
		return 0, 0
	}
	for _, x := range xs {
		mean += x
	}
	mean /= k
	if k < 2 {
		return mean, mean
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, mean - z*math.Sqrt(ss/(k-1))/math.Sqrt(k)
}

func medianPositive(xs []float64) float64 {
	var pos []float64
	for _, x := range xs {
		if x > 0 {
			pos = append(pos, x)
		}
	}
	if len(pos) == 0 {
		return 0
	}
	sort.Float64s(pos)
	return pos[(len(pos)-1)/2]
}

// toFixed converts an influence to consensus.InfluenceUnit fixed point, saturating.
func toFixed(x float64) int64 {
	v := math.Round(x * consensus.InfluenceUnit)
	switch {
	case math.IsNaN(v):
		return 0
	case v >= math.MaxInt64:
		return math.MaxInt64
	case v <= math.MinInt64:
		return math.MinInt64
	}
	return int64(v)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// flags collects one flag per (contributor, kind), on every contributor of the flagged member.
type flags map[[2]string]string

func (f flags) add(p Participant, kind, detail string) {
	for _, name := range names(p) {
		if _, ok := f[[2]string{name, kind}]; !ok {
			f[[2]string{name, kind}] = detail
		}
	}
}

func (f flags) sorted() []consensus.Flag {
	keys := make([][2]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	out := make([]consensus.Flag, len(keys))
	for i, k := range keys {
		out[i] = consensus.Flag{Contributor: k[0], Kind: k[1], Detail: f[k]}
	}
	return out
}

type unionFind []int

func newUnionFind(n int) unionFind {
	u := make(unionFind, n)
	for i := range u {
		u[i] = i
	}
	return u
}

func (u unionFind) find(a int) int {
	for u[a] != a {
		u[a] = u[u[a]]
		a = u[a]
	}
	return a
}

func (u unionFind) union(a, b int) {
	ra, rb := u.find(a), u.find(b)
	if ra < rb {
		u[rb] = ra
	} else if rb < ra {
		u[ra] = rb
	}
}
