package attribution

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cohortlab/cohort/consensus"
)

// world is a synthetic round: validation gradients g_k = ḡ + noise, a previous step u, and updates
// built from them the way honest and dishonest peers would.
type world struct {
	rng  *rand.Rand
	dim  int
	gbar []float32
	g    [][]float32
	u    []float32
	sk   Sketch // how score's partials carry the pairwise products
}

func newWorld(seed uint64, dim, K int) *world {
	w := &world{rng: rand.New(rand.NewPCG(seed, 1)), dim: dim}
	w.gbar = w.gauss(1)
	for k := 0; k < K; k++ {
		gk := w.gauss(0.5)
		for i := range gk {
			gk[i] += w.gbar[i]
		}
		w.g = append(w.g, gk)
	}
	w.u = w.mix(0.8, w.gbar, 0.6, w.gauss(1))
	return w
}

func (w *world) gauss(s float64) []float32 {
	x := make([]float32, w.dim)
	for i := range x {
		x[i] = float32(w.rng.NormFloat64() * s)
	}
	return x
}

func (w *world) mix(a float32, x []float32, b float32, y []float32) []float32 {
	out := make([]float32, len(x))
	for i := range x {
		out[i] = a*x[i] + b*y[i]
	}
	return out
}

func norm(x []float32) float64 { return math.Sqrt(dot(x, x)) }

func scaled(x []float32, f float32) []float32 { return (&world{}).mix(f, x, 0, x) }

// score runs the aggregator side (partials over three slices) and the leader side (combine, score).
func (w *world) score(t *testing.T, members []string, updates [][]float32, parts []Participant) Result {
	t.Helper()
	order := make([]int, len(members))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return compareStr(members[a], members[b]) })
	var ms []string
	var us [][]float32
	for _, i := range order {
		ms, us = append(ms, members[i]), append(us, updates[i])
	}
	cuts := []int{0, w.dim / 3, w.dim / 2, w.dim}
	var partials []Partial
	for s := 0; s+1 < len(cuts); s++ {
		a, b := cuts[s], cuts[s+1]
		var g [][]float32
		for _, gk := range w.g {
			g = append(g, gk[a:b])
		}
		var sl [][]float32
		for _, d := range us {
			sl = append(sl, d[a:b])
		}
		p, err := ComputePartial(uint64(a), uint64(b), g, w.u[a:b], ms, sl, w.sk)
		if err != nil {
			t.Fatal(err)
		}
		partials = append(partials, p)
	}
	sums, err := Combine(uint64(w.dim), partials)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Score(sums, parts, Config{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func part(member string, order uint32, samples uint64, dupOf string) Participant {
	return Participant{Member: member, Order: order, Samples: samples,
		Contributors: []consensus.ContributorData{{Name: member, Samples: samples, DuplicateOf: dupOf}}}
}

func payouts(t *testing.T, res Result, budget uint64) map[string]uint64 {
	t.Helper()
	data := map[string]uint64{}
	for _, w := range res.Data {
		data[w.Contributor] = w.Weight
	}
	compute := map[string]uint64{}
	for _, w := range res.Compute {
		compute[w.Contributor] = w.Weight
	}
	d, err := consensus.Allocate(budget*8/10, data)
	if err != nil {
		t.Fatal(err)
	}
	c, err := consensus.Allocate(budget-budget*8/10, compute)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for k, v := range d {
		out[k] += v
	}
	for k, v := range c {
		out[k] += v
	}
	return out
}

func hasFlag(res Result, who, kind string) bool {
	for _, f := range res.Flags {
		if f.Contributor == who && f.Kind == kind {
			return true
		}
	}
	return false
}

// TestPlantedContributors: six honest peers (different amounts of signal) and one of each
// dishonest kind. The dishonest ones earn nothing, each honest one earns, in the order of its
// signal.
func TestPlantedContributors(t *testing.T) {
	const budget, rounds = 1_000_000, 20
	total := map[string]uint64{} // over the rounds: one pool
	for seed := uint64(1); seed <= rounds; seed++ {
		w := newWorld(seed, 40000, 8)
		var members []string
		var updates [][]float32
		var parts []Participant
		add := func(name string, d []float32, dupOf string) {
			members, updates = append(members, name), append(updates, d)
			parts = append(parts, part(name, uint32(len(parts)+1), 1000, dupOf))
		}
		// Honest: a component along ḡ (their data's signal) plus their own direction.
		alphas := []float32{0.075, 0.1, 0.15, 0.2, 0.25, 0.3}
		names := []string{"h1", "h2", "h3", "h4", "h5", "h6"}
		for i, a := range alphas {
			add(names[i], w.mix(a, w.gbar, 1, w.gauss(0.5)), "")
		}
		honestNorm := norm(updates[3])
		noise := w.gauss(1)
		add("noise", scaled(noise, float32(honestNorm/norm(noise))), "")
		add("labelflip", w.mix(-0.2, w.gbar, 1, w.gauss(0.5)), "")
		add("scale", scaled(updates[2], 100), "")
		add("copy", w.mix(1, updates[4], 1, w.gauss(0.05)), "")    // trained on h5's data
		add("copyfp", w.mix(1, updates[4], 1, w.gauss(0.4)), "h5") // h5's data, other batches
		add("freerider", w.mix(1, w.u, 1, w.gauss(0.01)), "")
		add("zero", make([]float32, w.dim), "")

		res := w.score(t, members, updates, parts)
		pay := payouts(t, res, budget)
		for k, v := range pay {
			total[k] += v
		}
		for i, h := range names {
			if pay[h] == 0 {
				t.Errorf("seed %d: honest %s earned nothing", seed, h)
			}
			if i > 0 && pay[h] < pay[names[i-1]]/2 {
				t.Errorf("seed %d: %s (more signal) earned %d, %s earned %d", seed, h, pay[h], names[i-1], pay[names[i-1]])
			}
		}
		for _, f := range []struct{ who, kind string }{{"scale", "scaled"}, {"copy", "duplicate"}, {"copyfp", "duplicate"},
			{"zero", "empty"}, {"labelflip", "negative-influence"}, {"freerider", "stale"}} {
			if !hasFlag(res, f.who, f.kind) {
				t.Errorf("seed %d: %s not flagged %s; flags %v", seed, f.who, f.kind, res.Flags)
			}
		}
		if hasFlag(res, "h5", "duplicate") {
			t.Errorf("seed %d: the original h5 is flagged as a duplicate", seed)
		}
	}
	var bad uint64
	for _, b := range []string{"noise", "labelflip", "scale", "copy", "copyfp", "freerider", "zero"} {
		if total[b] > budget*rounds/100 {
			t.Errorf("%s earned %d of the pool of %d (> 1 %%)", b, total[b], budget*rounds)
		}
		bad += total[b]
	}
	if bad > budget*rounds*2/100 {
		t.Errorf("planted contributors earned %d of %d together (> 2 %%)", bad, budget*rounds)
	}
	t.Logf("planted contributors earned %.3f %% of the pool", 100*float64(bad)/float64(budget*rounds))
}

// TestScaledEarnsNoMoreThanTwin: scaling an update up never pays more than sending it unscaled.
func TestScaledEarnsNoMoreThanTwin(t *testing.T) {
	for _, f := range []float32{1.5, 3, 10, 100} {
		w := newWorld(7, 2000, 8)
		var ms []string
		var us [][]float32
		var ps []Participant
		for i := 0; i < 5; i++ {
			ms = append(ms, string(rune('a'+i)))
			us = append(us, w.mix(0.2, w.gbar, 1, w.gauss(0.5)))
			ps = append(ps, part(ms[i], uint32(i+1), 500, ""))
		}
		base := payouts(t, w.score(t, ms, us, ps), 1000000)
		us[4] = scaled(us[4], f)
		got := payouts(t, w.score(t, ms, us, ps), 1000000)
		limit := base["e"] // ×10 and beyond: excluded as scaled
		if f < 4 {
			limit = base["e"] * 105 / 100 // up to the median norm: a bounded gain
		}
		if got["e"] > limit {
			t.Errorf("×%v: scaled update earned %d, unscaled %d", f, got["e"], base["e"])
		}
	}
}

// TestSlicingInvariant: the sums do not depend on how the vector is cut into slices (up to
// rounding), and a missing member in one slice drops it.
func TestSlicingInvariant(t *testing.T) {
	w := newWorld(3, 1000, 4)
	ms := []string{"a", "b"}
	us := [][]float32{w.gauss(1), w.gauss(1)}
	whole, err := ComputePartial(0, 1000, w.g, w.u, ms, us, Sketch{})
	if err != nil {
		t.Fatal(err)
	}
	one, err := Combine(1000, []Partial{whole})
	if err != nil {
		t.Fatal(err)
	}
	var g1, g2 [][]float32
	for _, gk := range w.g {
		g1, g2 = append(g1, gk[:400]), append(g2, gk[400:])
	}
	p1, _ := ComputePartial(0, 400, g1, w.u[:400], ms, [][]float32{us[0][:400], us[1][:400]}, Sketch{})
	p2, _ := ComputePartial(400, 1000, g2, w.u[400:], ms, [][]float32{us[0][400:], us[1][400:]}, Sketch{})
	two, err := Combine(1000, []Partial{p2, p1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range one.GD {
		if math.Abs(one.GD[i]-two.GD[i]) > 1e-9*math.Max(1, math.Abs(one.GD[i])) {
			t.Fatalf("GD[%d]: %v vs %v", i, one.GD[i], two.GD[i])
		}
	}
	p2b, _ := ComputePartial(400, 1000, g2, w.u[400:], ms[:1], [][]float32{us[0][400:]}, Sketch{})
	s, err := Combine(1000, []Partial{p1, p2b})
	if err != nil || !slices.Equal(s.Members, []string{"a"}) {
		t.Fatalf("members %v, err %v; want [a]", s.Members, err)
	}
	if _, err := Combine(1000, []Partial{p1}); err == nil {
		t.Fatal("a partial cover was accepted")
	}
	if _, err := Combine(1000, []Partial{p1, p1, p2}); err == nil {
		t.Fatal("overlapping partials were accepted")
	}
}

func TestPartialCheck(t *testing.T) {
	w := newWorld(4, 100, 2)
	good, _ := ComputePartial(0, 100, w.g, w.u, []string{"a", "b"}, [][]float32{w.gauss(1), w.gauss(1)}, Sketch{})
	bad := func(f func(p *Partial)) Partial {
		p := good
		p.GD, p.Gram, p.NormSq, p.Members = slices.Clone(good.GD), slices.Clone(good.Gram), slices.Clone(good.NormSq), slices.Clone(good.Members)
		f(&p)
		return p
	}
	for name, p := range map[string]Partial{
		"nan":      bad(func(p *Partial) { p.GD[0] = math.NaN() }),
		"short":    bad(func(p *Partial) { p.Gram = p.Gram[:3] }),
		"unsorted": bad(func(p *Partial) { p.Members[0], p.Members[1] = "b", "a" }),
		"empty":    bad(func(p *Partial) { p.End = 0 }),
		"k":        bad(func(p *Partial) { p.K = 0 }),
	} {
		if err := p.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestDeterministic: the same inputs give the same weights, bit for bit.
func TestDeterministic(t *testing.T) {
	run := func() Result {
		w := newWorld(9, 500, 8)
		ms := []string{"a", "b", "c"}
		us := [][]float32{w.mix(0.3, w.gbar, 1, w.gauss(1)), w.mix(0.2, w.gbar, 1, w.gauss(1)), w.gauss(1)}
		return w.score(t, ms, us, []Participant{part("a", 1, 10, ""), part("b", 2, 20, ""), part("c", 3, 30, "")})
	}
	a, b := run(), run()
	if !slices.Equal(a.Data, b.Data) || !slices.Equal(a.Compute, b.Compute) || !slices.Equal(a.Influence, b.Influence) {
		t.Fatalf("differs:\n%v\n%v", a, b)
	}
}

// A registered fingerprint is the member's claim: registering someone's published fingerprint
// first, and sending an update of anything else, moves no credit from the data's owner.
func TestFingerprintClaimMovesNoCredit(t *testing.T) {
	const budget = 1_000_000
	w := newWorld(7, 40000, 8)
	var members []string
	var updates [][]float32
	var parts []Participant
	add := func(name string, d []float32, dupOf string) {
		members, updates = append(members, name), append(updates, d)
		parts = append(parts, part(name, uint32(len(parts)+1), 1000, dupOf))
	}
	add("front", w.gauss(0.6), "") // joined first, claiming the owner's fingerprint
	add("owner", w.mix(0.25, w.gbar, 1, w.gauss(0.5)), "front")
	for i, a := range []float32{0.1, 0.15, 0.2, 0.3} {
		add(fmt.Sprintf("h%d", i+1), w.mix(a, w.gbar, 1, w.gauss(0.5)), "")
	}
	res := w.score(t, members, updates, parts)
	pay := payouts(t, res, budget)
	if pay["owner"] < pay["h1"] {
		t.Errorf("the data's owner earned %d, less than h1's %d: the claim took its credit", pay["owner"], pay["h1"])
	}
	if pay["front"] > budget/100 {
		t.Errorf("the claimant earned %d of %d", pay["front"], budget)
	}
	if hasFlag(res, "owner", "duplicate") || !hasFlag(res, "owner", "fingerprint") {
		t.Errorf("owner's flags %v: want the fingerprint noted, not a duplicate", res.Flags)
	}
}

// TestWhoEarns: the rules that keep a member with a positive score from earning in a round — a
// history that is not positive on average (with a harder bar when the first round hurt), an
// update left out of the aggregate, a score far below the round's median — and that what earns
// is the tempered mean score.
func TestWhoEarns(t *testing.T) {
	w := newWorld(3, 20000, 8)
	names := []string{"a", "b", "c", "d", "e"}
	var updates [][]float32
	for range names {
		updates = append(updates, w.mix(0.2, w.gbar, 1, w.gauss(0.5)))
	}
	weak := w.mix(0.01, w.gbar, 1, w.gauss(0.5))
	// Histories are in units of a's influence this round.
	var x float64
	{
		var parts []Participant
		for i, n := range names {
			parts = append(parts, part(n, uint32(i+1), 1000, ""))
		}
		x = w.score(t, names, updates, parts).Members[0].LCB
		if x <= 0 {
			t.Fatalf("a's influence %v", x)
		}
	}
	hist := func(xs ...float64) []float64 {
		for i := range xs {
			xs[i] *= x
		}
		return xs
	}
	for _, tc := range []struct {
		name    string
		setup   func(parts []Participant, ups [][]float32)
		earns   map[string]bool
		flagged string
	}{
		{"everyone", func([]Participant, [][]float32) {}, map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true}, ""},
		{"negative on average", func(p []Participant, _ [][]float32) { p[0].History = hist(0.5, -3, -2) }, map[string]bool{"a": false}, "inconsistent"},
		{"positive on average", func(p []Participant, _ [][]float32) { p[0].History = hist(0.5, -0.1, 0.2) }, map[string]bool{"a": true}, ""},
		// Started by raising the loss, positive on average since: not enough.
		{"first round hurt", func(p []Participant, _ [][]float32) { p[0].History = hist(-0.2, -0.2, 0.9, 0.1) }, map[string]bool{"a": false}, "inconsistent"},
		{"first round hurt, consistently good since", func(p []Participant, _ [][]float32) {
			p[0].History = hist(-0.01, 1, 1.02, 0.98, 1, 1, 1.01, 0.99)
		}, map[string]bool{"a": true}, ""},
		{"left out", func(p []Participant, _ [][]float32) { p[1].LeftOut = true }, map[string]bool{"b": false, "a": true}, ""},
		{"far below the median", func(_ []Participant, u [][]float32) { copy(u[2], weak) }, map[string]bool{"c": false, "a": true}, ""},
		// The floor is on the record, the mean over its rounds: an update that adds little in a
		// late round, from a member whose data taught the model early, still earns; updates that
		// barely move the loss in every round, as noise does, do not.
		{"weak this round, strong record", func(p []Participant, u [][]float32) { copy(u[2], weak); p[2].History = hist(1, 1.1, 0.9) },
			map[string]bool{"c": true, "a": true}, ""},
		{"weak in every round", func(p []Participant, u [][]float32) { copy(u[2], weak); p[2].History = hist(0.03, 0.05, 0.02) },
			map[string]bool{"c": false, "a": true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var parts []Participant
			ups := make([][]float32, len(updates))
			for i, n := range names {
				parts = append(parts, part(n, uint32(i+1), 1000, ""))
				ups[i] = append([]float32(nil), updates[i]...)
			}
			tc.setup(parts, ups)
			res := w.score(t, names, ups, parts)
			data := map[string]uint64{}
			for _, d := range res.Data {
				data[d.Contributor] = d.Weight
			}
			for who, want := range tc.earns {
				if got := data[who] > 0; got != want {
					t.Errorf("%s earns: %v, want %v (weights %v)", who, got, want, res.Data)
				}
			}
			if tc.flagged != "" && !hasFlag(res, "a", tc.flagged) {
				t.Errorf("a not flagged %s: %v", tc.flagged, res.Flags)
			}
			// What earns is the tempered mean score.
			var sum float64
			for _, m := range res.Members {
				if data[m.Member] > 0 {
					sum += math.Pow(m.Reward, 0.1)
				}
			}
			for _, m := range res.Members {
				if data[m.Member] == 0 {
					continue
				}
				want := math.Pow(m.Reward, 0.1) / sum * 1e12
				if got := float64(data[m.Member]); math.Abs(got-want) > 1e-6*want+1 {
					t.Errorf("%s weight %v, want (mean score)^0.1 share %v", m.Member, got, want)
				}
			}
		})
	}
}

// TestCreditCarries: a member is paid by the credit it earned over the rounds (Participant.Credit,
// plus its share of this round's, recorded in Influence.Credit), while it is trusted and its update
// is in the aggregate — also in a round its own update earns nothing.
func TestCreditCarries(t *testing.T) {
	w := newWorld(5, 20000, 8)
	names := []string{"a", "b", "c"}
	ups := [][]float32{
		w.mix(0.2, w.gbar, 1, w.gauss(0.5)),
		w.mix(0.2, w.gbar, 1, w.gauss(0.5)),
		w.mix(-0.05, w.gbar, 1, w.gauss(0.5)), // c's update hurts this round
	}
	parts := []Participant{part("a", 1, 1000, ""), part("b", 2, 1000, ""), part("c", 3, 1000, "")}
	res := w.score(t, names, ups, parts)
	weights := func(r Result) map[string]uint64 {
		m := map[string]uint64{}
		for _, d := range r.Data {
			m[d.Contributor] = d.Weight
		}
		return m
	}
	if got := weights(res); got["c"] != 0 || got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("without credit: %v", got)
	}
	var sum uint64
	for _, x := range res.Influence {
		sum += x.Credit
		if x.Contributor == "c" && x.Credit != 0 {
			t.Errorf("c earned credit %d with an update that hurt", x.Credit)
		}
	}
	if sum > consensus.CreditScale || sum < consensus.CreditScale-10 {
		t.Errorf("this round's credits sum to %d, want %d", sum, uint64(consensus.CreditScale))
	}
	// c earned well before, and its history is positive on average: it is paid its credit.
	lcb := res.Members[2].LCB
	parts[2].History = []float64{-5 * lcb, -5 * lcb}
	parts[2].Credit = 2
	got := weights(w.score(t, names, ups, parts))
	if got["c"] == 0 || got["c"] < got["a"] {
		t.Errorf("c with 2 rounds of credit is paid %d against a's %d", got["c"], got["a"])
	}
	// Left out of the aggregate, or no longer trusted, it earns nothing new but is still paid the
	// credit it earned: its data is in the model. Without credit it is paid nothing.
	for _, tc := range []struct {
		name    string
		leftOut bool
		history []float64
	}{{"left out", true, []float64{-5 * lcb, -5 * lcb}}, {"not trusted", false, []float64{5 * lcb, 5 * lcb}}} {
		parts[2].LeftOut, parts[2].History, parts[2].Credit = tc.leftOut, tc.history, 2
		r := w.score(t, names, ups, parts)
		if got := weights(r); got["c"] == 0 {
			t.Errorf("%s with 2 rounds of credit, c is paid nothing", tc.name)
		}
		for _, x := range r.Influence {
			if x.Contributor == "c" && x.Credit != 0 {
				t.Errorf("%s, c earned new credit %d", tc.name, x.Credit)
			}
		}
		parts[2].Credit = 0
		if got := weights(w.score(t, names, ups, parts)); got["c"] != 0 {
			t.Errorf("%s without credit, c is paid %d", tc.name, got["c"])
		}
	}
}
