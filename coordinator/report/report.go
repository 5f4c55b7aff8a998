// Package report turns a cohort's replicated records (its proposal, cohort, rounds and the
// contribution ledger) into a report: per contributor the data it brought, the rounds it took part
// in, its measured influence, what it was paid and why it was flagged; per round the traffic, the
// validation loss and accuracy and the budget paid out; and the pool's totals.
//
// The package is pure: Build reads no clock, file or socket, so the same records give the same
// report on every coordinator. The renderers write what Build returns:
//
//	r := report.Build(proposal, cohort, rounds, ledger)
//	report.WriteTable(os.Stdout, r)          // aligned terminal table
//	report.WriteJSON(os.Stdout, r)           // stable snake_case fields
//	report.WriteCSV(os.Stdout, r)            // one row per contributor
//	report.WriteRoundsCSV(os.Stdout, r)      // one row per round
//	files, err := report.WritePlots(dir, r)  // loss.svg and shares.svg
//
// Amounts are the ledger's integer units. Shares are percentages; a share of nothing is 0, never
// NaN.
package report

import (
	"cmp"
	"fmt"
	"slices"
	"sort"

	"github.com/cohortlab/cohort/consensus"
)

// Report is the contribution report of one cohort.
type Report struct {
	Cohort        uint64 `json:"cohort"`
	Proposal      uint64 `json:"proposal"`
	Name          string `json:"name"`
	Model         string `json:"model"`
	Dataset       string `json:"dataset"`
	Codec         string `json:"codec"`
	Status        string `json:"status"`         // forming, running, done
	CurrentRound  uint32 `json:"current_round"`  // latest opened round, 0 before the first
	PlannedRounds uint32 `json:"planned_rounds"` // rounds the proposal asked for
	Members       int    `json:"members"`

	Totals       Totals        `json:"totals"`
	Contributors []Contributor `json:"contributors"` // by payout, highest first, then by name
	Rounds       []Round       `json:"rounds"`       // by number
}

// Totals sums up the cohort's reward pool.
type Totals struct {
	Pool      uint64 `json:"pool"`
	Paid      uint64 `json:"paid"`
	Remaining uint64 `json:"remaining"`
	// Carry is budget of scored rounds that nobody earned, available to later rounds.
	Carry        uint64 `json:"carry"`
	RoundsScored uint32 `json:"rounds_scored"`
	Samples      uint64 `json:"samples"`    // registered samples, all contributors
	BytesSent    uint64 `json:"bytes_sent"` // reported by receipts, all rounds
}

// Contributor is one data contributor's line of the report.
type Contributor struct {
	Name      string  `json:"contributor"`
	Member    string  `json:"member"`  // member ID that speaks for the contributor
	Samples   uint64  `json:"samples"` // registered at join
	Rounds    int     `json:"rounds"`  // rounds whose receipts include its member
	Influence float64 `json:"influence"`
	Payout    uint64  `json:"payout"` // Data + Compute
	Data      uint64  `json:"data"`
	Compute   uint64  `json:"compute"`
	SharePaid float64 `json:"share_of_paid_pct"` // of what the cohort paid so far
	SharePool float64 `json:"share_of_pool_pct"` // of the whole pool
	// DuplicateOf is the earliest contributor that registered the same data fingerprint.
	DuplicateOf string   `json:"duplicate_of,omitempty"`
	Flags       []string `json:"flags"` // e.g. "duplicate of alice (12 rounds)"
}

// Round is one round's line of the report.
type Round struct {
	Number       uint32 `json:"round"`
	Status       string `json:"status"` // open, closed
	Participants int    `json:"participants"`
	Receipts     int    `json:"receipts"`
	SamplesUsed  uint64 `json:"samples_used"`
	BytesSent    uint64 `json:"bytes_sent"`
	OpenedAt     int64  `json:"opened_at_ms"`
	Deadline     int64  `json:"deadline_ms"`
	ClosedAt     int64  `json:"closed_at_ms,omitempty"`
	Scored       bool   `json:"scored"`
	// ValLoss and ValAccuracy (a fraction) are absent when the validator did not measure them.
	ValLoss     *float64 `json:"val_loss,omitempty"`
	ValAccuracy *float64 `json:"val_accuracy,omitempty"`
	ValSamples  uint32   `json:"val_samples,omitempty"`
	Budget      uint64   `json:"budget"`
	Paid        uint64   `json:"paid"`
	Flags       int      `json:"flags"`
	Note        string   `json:"note,omitempty"`
	Payouts     []Payout `json:"payouts"` // by contributor
}

// Payout is what one contributor earned in one round.
type Payout struct {
	Contributor string `json:"contributor"`
	Data        uint64 `json:"data"`
	Compute     uint64 `json:"compute"`
}

// Build computes the report of cohort c (proposal p) from its rounds and the ledger. Records of
// other cohorts in l are ignored; rounds may come in any order.
func Build(p consensus.Proposal, c consensus.Cohort, rounds []consensus.Round, l consensus.Ledger) Report {
	r := Report{
		Cohort: c.ID, Proposal: c.Proposal, Name: p.Name, Model: p.Model, Dataset: p.Dataset, Codec: p.Params.Codec,
		Status: string(c.Status), CurrentRound: c.CurrentRound, PlannedRounds: p.Params.Rounds, Members: len(c.Members),
		Contributors: []Contributor{}, Rounds: []Round{},
	}

	// Contributors as registered, in join order.
	byName := map[string]*Contributor{}
	var order []string
	add := func(name, member string) *Contributor {
		if x := byName[name]; x != nil {
			return x
		}
		// The ledger names a contributor by its member's ID and its name (consensus.ContributorKey):
		// people read the name, with the member beside it.
		x := &Contributor{Name: consensus.ContributorName(name), Member: member, Flags: []string{}}
		byName[name] = x
		order = append(order, name)
		return x
	}
	memberOf := map[string][]string{} // member ID -> its contributors
	for _, m := range c.Members {
		for _, d := range m.Contributors {
			x := add(d.Name, m.Member)
			x.Samples += d.Samples
			x.DuplicateOf = consensus.ContributorName(d.DuplicateOf)
			r.Totals.Samples += d.Samples
			memberOf[m.Member] = append(memberOf[m.Member], d.Name)
		}
	}

	rs := slices.Clone(rounds)
	slices.SortFunc(rs, func(a, b consensus.Round) int { return cmp.Compare(a.Number, b.Number) })
	flagsOf := map[string]map[string]*flagCount{} // contributor -> flag kind -> rounds and details
	influence := map[string]int64{}               // contributor -> sum of fixed-point values
	for _, cr := range rs {
		if cr.Cohort != c.ID {
			continue
		}
		rr := Round{Number: cr.Number, Status: string(cr.Status), Participants: len(cr.Participants), Receipts: len(cr.Receipts),
			OpenedAt: cr.OpenedAt, Deadline: cr.Deadline, ClosedAt: cr.ClosedAt, Scored: cr.Scored,
			Budget: cr.Budget, Paid: cr.Paid, Flags: len(cr.Flags), Note: cr.ScoreNote, Payouts: []Payout{}}
		for _, rc := range cr.Receipts {
			rr.BytesSent += rc.BytesSent
			rr.SamplesUsed += rc.SamplesUsed
			for _, name := range memberOf[rc.Member] {
				byName[name].Rounds++
			}
		}
		if m := cr.Metrics; m.Measured {
			loss := float64(m.ValLossMicro) / 1e6
			acc := float64(m.ValAccuracyBP) / 1e4
			rr.ValLoss, rr.ValAccuracy, rr.ValSamples = &loss, &acc, m.Samples
		}
		for _, in := range cr.Influence {
			add(in.Contributor, "")
			influence[in.Contributor] += in.Value
		}
		seen := map[[2]string]bool{} // a kind counts once per round
		for _, f := range cr.Flags {
			if seen[[2]string{f.Contributor, f.Kind}] {
				continue
			}
			seen[[2]string{f.Contributor, f.Kind}] = true
			add(f.Contributor, "")
			if flagsOf[f.Contributor] == nil {
				flagsOf[f.Contributor] = map[string]*flagCount{}
			}
			fc := flagsOf[f.Contributor][f.Kind]
			if fc == nil {
				fc = &flagCount{kind: f.Kind, details: map[string]bool{}}
				flagsOf[f.Contributor][f.Kind] = fc
			}
			fc.rounds++
			fc.details[f.Detail] = true
			fc.last = f.Detail
		}
		r.Totals.BytesSent += rr.BytesSent
		r.Rounds = append(r.Rounds, rr)
	}

	// Payouts of this cohort.
	roundIdx := map[uint32]int{}
	for i, rr := range r.Rounds {
		roundIdx[rr.Number] = i
	}
	var paid uint64
	for _, po := range l.Payouts {
		if po.Cohort != c.ID {
			continue
		}
		x := add(po.Contributor, "")
		x.Data += po.Data
		x.Compute += po.Compute
		x.Payout += po.Data + po.Compute
		paid += po.Data + po.Compute
		if i, ok := roundIdx[po.Round]; ok {
			r.Rounds[i].Payouts = append(r.Rounds[i].Payouts, Payout{Contributor: consensus.ContributorName(po.Contributor), Data: po.Data, Compute: po.Compute})
		}
	}
	for i := range r.Rounds {
		slices.SortFunc(r.Rounds[i].Payouts, func(a, b Payout) int { return cmp.Compare(a.Contributor, b.Contributor) })
	}

	// Totals: the pool record when there is one (the cohort's first round created it), else the
	// proposal's pool and what the payouts add up to.
	r.Totals.Pool, r.Totals.Paid = p.RewardPool, paid
	for _, pl := range l.Pools {
		if pl.Cohort == c.ID {
			r.Totals.Pool, r.Totals.Paid, r.Totals.Carry, r.Totals.RoundsScored = pl.Total, pl.Paid, pl.Carry, pl.RoundsPaid
		}
	}
	if r.Totals.Paid <= r.Totals.Pool {
		r.Totals.Remaining = r.Totals.Pool - r.Totals.Paid
	}

	for _, name := range order {
		x := byName[name]
		x.Influence = float64(influence[name]) / consensus.InfluenceUnit
		x.SharePaid = percent(x.Payout, paid)
		x.SharePool = percent(x.Payout, r.Totals.Pool)
		if x.DuplicateOf != "" {
			x.Flags = append(x.Flags, fmt.Sprintf("duplicate of %s (registered)", x.DuplicateOf))
		}
		x.Flags = append(x.Flags, flagLabels(flagsOf[name])...)
		r.Contributors = append(r.Contributors, *x)
	}
	sort.SliceStable(r.Contributors, func(i, j int) bool {
		a, b := r.Contributors[i], r.Contributors[j]
		if a.Payout != b.Payout {
			return a.Payout > b.Payout
		}
		return a.Name < b.Name
	})
	return r
}

// flagCount is what one kind of flag said about a contributor over the rounds.
type flagCount struct {
	kind    string
	rounds  int
	details map[string]bool // distinct details
	last    string          // detail of the latest round flagged
}

// label is "detail (n rounds)" when every round said the same (the kind when it said nothing), else
// "kind (n rounds; last: detail)": details that carry a number differ from round to round.
func (f *flagCount) label() string {
	unit := "rounds"
	if f.rounds == 1 {
		unit = "round"
	}
	if len(f.details) == 1 {
		text := f.last
		if text == "" {
			text = f.kind
		}
		return fmt.Sprintf("%s (%d %s)", text, f.rounds, unit)
	}
	if f.last == "" {
		return fmt.Sprintf("%s (%d %s)", f.kind, f.rounds, unit)
	}
	return fmt.Sprintf("%s (%d %s; last: %s)", f.kind, f.rounds, unit, f.last)
}

// flagLabels renders a contributor's flags, the most frequent first, then by kind.
func flagLabels(kinds map[string]*flagCount) []string {
	fcs := make([]*flagCount, 0, len(kinds))
	for _, fc := range kinds {
		fcs = append(fcs, fc)
	}
	sort.Slice(fcs, func(i, j int) bool {
		if fcs[i].rounds != fcs[j].rounds {
			return fcs[i].rounds > fcs[j].rounds
		}
		return fcs[i].kind < fcs[j].kind
	})
	out := make([]string, len(fcs))
	for i, fc := range fcs {
		out[i] = fc.label()
	}
	return out
}

// percent is 100·x/total, 0 when total is 0.
func percent(x, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(x) / float64(total)
}

// CumulativeShares returns, per contributor (in the report's order), its cumulative share of the
// cohort's payouts in percent after each round of r.Rounds. Before anything is paid every share is
// 0.
func (r Report) CumulativeShares() map[string][]float64 {
	out := make(map[string][]float64, len(r.Contributors))
	sum := map[string]uint64{}
	var total uint64
	for i, rr := range r.Rounds {
		for _, p := range rr.Payouts {
			sum[p.Contributor] += p.Data + p.Compute
			total += p.Data + p.Compute
		}
		for _, c := range r.Contributors {
			if out[c.Name] == nil {
				out[c.Name] = make([]float64, len(r.Rounds))
			}
			out[c.Name][i] = percent(sum[c.Name], total)
		}
	}
	return out
}
