package sim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
)

func quiet() *slog.Logger {
	if os.Getenv("SIMLOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// record is a simulated cohort's rounds as its coordinators' Raft logs hold them: who sent a
// receipt for each round, and who was left out of its aggregate, by member name.
type record struct {
	receipts, excluded [][]string // by round number - 1, sorted
}

// recorded replays the Raft log of each of a simulation's coordinators (Config.Dir dir, nodes
// c1…cN; a killed one's log stops early) and returns the record of the one holding most rounds
// of the simulation's cohort.
func recorded(t *testing.T, dir string, coordinators int) record {
	t.Helper()
	var rounds []consensus.Round
	names := map[string]string{}
	for i := 1; i <= coordinators; i++ {
		st, _, err := consensus.ReplayDir(filepath.Join(dir, fmt.Sprintf("c%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		rs, err := st.Rounds(1)
		if err != nil || len(rs) <= len(rounds) {
			continue
		}
		rounds = rs
		for _, m := range st.Members() {
			names[m.ID] = m.Name
		}
	}
	var rec record
	named := func(ids []string) []string {
		out := []string{}
		for _, id := range ids {
			out = append(out, names[id])
		}
		slices.Sort(out)
		return out
	}
	for _, r := range rounds {
		var ids []string
		for _, rc := range r.Receipts {
			ids = append(ids, rc.Member)
		}
		rec.receipts = append(rec.receipts, named(ids))
		rec.excluded = append(rec.excluded, named(r.Excluded))
	}
	return rec
}

// log prints the record, a line a round.
func (rec record) log(t *testing.T) {
	t.Helper()
	for i := range rec.receipts {
		t.Logf("round %d: receipts %v, left out %v", i+1, rec.receipts[i], rec.excluded[i])
	}
}

func TestCohortTrainsOverQUIC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var rounds []Progress
	// Overlap 2: the race detector (make test) also watches the overlap steps run beside the exchange.
	// The validators are ready only after the first rounds closed, as on a busy machine (the process
	// end-to-end test's took 1.3–1.9 s against a 1.5 s first round): those rounds are scored too.
	dir := t.TempDir()
	sum, err := Run(ctx, Config{Coordinators: 3, Peers: 3, Model: "mlp:784-32-10", Rounds: 4, InnerSteps: 10, Batch: 32, Overlap: 2,
		Codec: "q8", Partition: "iid", Seed: 1, ValSamples: 300, Logger: quiet(), Link: "50mbit,5ms,0.5%", SlowValidator: 3 * time.Second,
		Dir: dir, Progress: func(p Progress) { rounds = append(rounds, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.RoundsCompleted != 4 || len(rounds) != 4 {
		t.Fatalf("rounds completed %d, progress %d", sum.RoundsCompleted, len(rounds))
	}
	if !sum.ReplicasAgree {
		t.Fatal("peer replicas differ from the recorded model hash")
	}
	if sum.FinalValAccuracy < 0.6 || rounds[3].ValLoss >= rounds[0].ValLoss {
		t.Fatalf("cohort did not learn: %+v", rounds)
	}
	for _, p := range sum.Peers {
		if p.RoundsParticipated != 4 || p.PayloadBytes == 0 || p.WireBytesSent < p.PayloadBytes {
			t.Fatalf("peer %+v", p)
		}
	}
	// The coordinators recorded each peer's receipt in every round: by name, the rounds the
	// peers counted themselves.
	rec := recorded(t, dir, 3)
	rec.log(t)
	all := []string{"peer-1", "peer-2", "peer-3"}
	if len(rec.receipts) != 4 {
		t.Fatalf("%d rounds recorded, want 4", len(rec.receipts))
	}
	for i, got := range rec.receipts {
		if !slices.Equal(got, all) {
			t.Fatalf("round %d: receipts from %v, want from %v", i+1, got, all)
		}
	}
	// Every round was scored and paid out of the pool, exactly, to the peers that helped.
	var paid uint64
	for _, v := range sum.Shares {
		paid += v
	}
	if sum.RoundsScored != 4 || len(sum.ScoreNotes) > 0 || paid == 0 || paid > sum.Pool {
		t.Fatalf("%d rounds scored (notes %v), %d of %d paid: %v", sum.RoundsScored, sum.ScoreNotes, paid, sum.Pool, sum.Shares)
	}
	t.Logf("%+v", sum)
}

// TestFaults kills the leader coordinator in round 2 (its slice moves to a live coordinator and the
// round completes) and a peer in round 3 (restarted in round 4),
// and makes another peer late every round, with every peer overlapping 3 of its 8 steps with the
// exchange, on the tuned default setting (sign codes, outer lr 1, μ 0.8, error-feedback decay 0.9):
// the cohort still finishes every round, every replica
// holds the recorded model, the late peer's updates never count, and the killed peer re-syncs.
func TestFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var rounds []Progress
	dir := t.TempDir()
	sum, err := Run(ctx, Config{Coordinators: 3, Peers: 4, Model: "mlp:784-32-10", Rounds: 5, InnerSteps: 8, Batch: 32,
		Codec: "topk:0.05/m+q1", OuterLR: "1", OuterMomentum: "0.8", ErrorDecay: "0.9", Partition: "iid", Seed: 2, ValSamples: 300, Logger: quiet(),
		KillLeaderAt: 2, KillPeer: "peer-2@3", Straggler: "peer-4", RoundTimeout: 12 * time.Second, Overlap: 3,
		Dir: dir, Progress: func(p Progress) { rounds = append(rounds, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.RoundsCompleted != 5 || !sum.ReplicasAgree || sum.LeaderChanges == 0 {
		t.Fatalf("summary %+v", sum)
	}
	applied := 0
	for _, r := range rounds {
		if r.Applied {
			applied++
			if r.Participants > 3 {
				t.Fatalf("round %d counted %d receipts: the late peer's should be refused", r.Round, r.Participants)
			}
		}
	}
	// The killed leader aggregated a slice of round 2: the new leader moves it to a live
	// coordinator, the peers resend it there, and the round completes instead of being abandoned.
	if applied < 5 || rounds[len(rounds)-1].ValLoss >= rounds[0].ValLoss {
		t.Fatalf("%d of 5 rounds applied: %+v", applied, rounds)
	}
	// By name: the late peer-4's receipt never counts, and peer-2 — killed as round 3 opened,
	// restarted in round 4 — re-synced and counts again in the last round.
	rec := recorded(t, dir, 3)
	rec.log(t)
	if len(rec.receipts) != 5 {
		t.Fatalf("%d rounds recorded, want 5", len(rec.receipts))
	}
	for i, got := range rec.receipts {
		if slices.Contains(got, "peer-4") {
			t.Errorf("round %d: receipts from %v: the late peer-4's was counted", i+1, got)
		}
	}
	// A round slowed by the machine closes before some receipts arrive, the honest peers' as much as
	// peer-2's: peer-2 has returned if it counts in a round after its restart (4 or 5), and the test
	// says so only where the honest peers made some round in time.
	back, measured := false, false
	for _, got := range rec.receipts[3:] {
		back = back || slices.Contains(got, "peer-2")
		measured = measured || (slices.Contains(got, "peer-1") && slices.Contains(got, "peer-3"))
	}
	if measured && !back {
		t.Errorf("rounds 4-5: receipts from %v, none from the restarted peer-2", rec.receipts[3:])
	} else if !back {
		t.Logf("rounds 4-5 closed before the honest peers' receipts (%v): peer-2's return is not measured this run", rec.receipts[3:])
	}
	// Nor is it paid: no receipt, no score, no share of the pool.
	if got := sum.Shares["peer-4"]; got != 0 {
		t.Errorf("the late peer-4 was paid %d of %d; shares %v", got, sum.Pool, sum.Shares)
	}
}

// TestSparseDownlinkSurvivesLeaderKill runs a cohort whose proposal names a top-k down codec and
// kills the leader as round 2 opens: its slice moves to a live coordinator, which aggregates it
// with no residual of its own. Every replica, peers and coordinators, still applies the same
// decoded aggregates (they all hold the recorded model), the proposal records the down codec,
// and the aggregates fetched are a small fraction of a dense q8 aggregate.
func TestSparseDownlinkSurvivesLeaderKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const down = "topk:0.1/m+q8"
	var rounds []Progress
	dir := t.TempDir()
	sum, err := Run(ctx, Config{Coordinators: 3, Peers: 3, Model: "mlp:784-32-10", Rounds: 4, InnerSteps: 8, Batch: 32,
		Codec: "topk:0.05/m+q1", DownCodec: down, Partition: "iid", Seed: 3, ValSamples: 300, Logger: quiet(),
		KillLeaderAt: 2, RoundTimeout: 12 * time.Second, Dir: dir, Progress: func(p Progress) { rounds = append(rounds, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.RoundsCompleted != 4 || !sum.ReplicasAgree || sum.LeaderChanges == 0 || sum.DownCodec != down {
		t.Fatalf("summary %+v", sum)
	}
	if rounds[len(rounds)-1].ValLoss >= rounds[0].ValLoss {
		t.Fatalf("cohort did not learn: %+v", rounds)
	}
	// A dense q8 aggregate is a byte a parameter; the sparse one (10 % of the first layer's values
	// with their indices, the small tensors dense) about 2 bits, under 4 with a round fetched again
	// after the failover.
	const params = 784*32 + 32 + 32*10 + 10
	if got := sum.Scale.AggregateBytesPerPeerRound; got <= 0 || got > params/2 {
		t.Fatalf("%.0f bytes of aggregates per peer and round, want at most %d", got, params/2)
	}
	st, _, err := consensus.ReplayDir(filepath.Join(dir, "c2"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := st.Proposal(1); err != nil || p.Params.DownCodec != down {
		t.Fatalf("proposal 1 recorded %+v, %v", p.Params, err)
	}
}

// The character model trains as a cohort too, the play split by speaker among the peers.
func TestCharLMCohort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sum, err := Run(ctx, Config{Coordinators: 3, Peers: 2, Model: "charlm", Partition: "natural", Rounds: 2, InnerSteps: 5,
		Batch: 4, Codec: "q8", Seed: 1, ValSamples: 20, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if sum.RoundsCompleted != 2 || !sum.ReplicasAgree || sum.FinalValLoss <= 0 {
		t.Fatalf("summary %+v", sum)
	}
}

// TestGPTCohortSurvivesLeaderKill: a text cohort — the embedded play split by speaker among four
// peers, a byte-level GPT, each peer behind a 10 Mbit/s, 50 ms, 1 % loss link — loses its leader
// coordinator as round 2 opens and still finishes: every round completes, every replica holds the
// recorded model, every round is scored, and the pool is paid out to the peers.
func TestGPTCohortSurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("a text cohort over shaped links with a leader kill, about a minute: make e2e runs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var rounds []Progress
	sum, err := Run(ctx, Config{Coordinators: 3, Peers: 4, Model: "gpt:1-32-2-32", Partition: "natural", Rounds: 4, InnerSteps: 10,
		Batch: 4, Seed: 1, ValSamples: 50, Logger: quiet(), Link: "10mbit,50ms,1%", KillLeaderAt: 2,
		Progress: func(p Progress) { rounds = append(rounds, p) }})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rounds {
		t.Logf("round %+v", r)
	}
	t.Logf("rounds %d, scored %d, leader changes %d, val loss %.3f, shares %v, notes %v", sum.RoundsCompleted, sum.RoundsScored,
		sum.LeaderChanges, sum.FinalValLoss, sum.Shares, sum.ScoreNotes)
	if sum.RoundsCompleted != 4 || !sum.ReplicasAgree || sum.LeaderChanges == 0 {
		t.Fatalf("summary %+v", sum)
	}
	if sum.RoundsScored != 4 {
		t.Errorf("%d of 4 rounds scored (notes %v)", sum.RoundsScored, sum.ScoreNotes)
	}
	var paid uint64
	for _, v := range sum.Shares {
		paid += v
	}
	if paid == 0 || paid > sum.Pool {
		t.Errorf("paid %d of a pool of %d: %v", paid, sum.Pool, sum.Shares)
	}
	if len(rounds) == 0 || rounds[len(rounds)-1].ValLoss >= rounds[0].ValLoss {
		t.Errorf("validation loss did not fall: %+v", rounds)
	}
}
