package sim

import (
	"context"
	"testing"
	"time"
)

// A cohort of 256 peers: every round scored and paid, replicas agreeing, and what grows with the
// peers kept in check — a peer's control messages per round (its own view of the round, not every
// participant's record) and the Raft entries per round (receipts committed together). The bound
// on control messages leaves room for a loaded machine: a slower round means more long-polls
// (one every protocol.NextRoundWait while a peer waits for the next round); on a quiet one a peer
// sends and receives about 1.5 KB a round, while every participant's record would be about 50 KB.
func TestCohortOf256Peers(t *testing.T) {
	if testing.Short() {
		t.Skip("256 peers: make e2e")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const peers, rounds = 256, 4
	sum, err := Run(ctx, Config{Coordinators: 3, Peers: peers, Model: "mlp:784-16-10", Rounds: rounds, InnerSteps: 5,
		Partition: "iid", Seed: 1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	var paid uint64
	for _, v := range sum.Shares {
		paid += v
	}
	sc := sum.Scale
	t.Logf("setup %.1fs, %.1fs a round, %.0f Raft entries a round, %.0f B of control messages and %.0f B of QUIC overhead per peer per round",
		sc.SetupSeconds, sc.RoundSeconds, sc.RaftEntriesPerRound, sc.ControlBytesPerPeerRound, sc.PacketOverheadPerPeerRound)
	switch {
	case sum.RoundsCompleted != rounds || sum.RoundsScored != rounds:
		t.Fatalf("%d rounds completed, %d scored, want %d: %v", sum.RoundsCompleted, sum.RoundsScored, rounds, sum.ScoreNotes)
	case !sum.ReplicasAgree:
		t.Fatal("replicas disagree")
	case paid == 0 || len(sum.ScoreNotes) > 0:
		t.Fatalf("paid %d of the pool of %d; rounds that paid nobody: %v", paid, sum.Pool, sum.ScoreNotes)
	case sc.ControlBytesPerPeerRound > 8<<10:
		t.Fatalf("%.0f B of control messages per peer per round, want ≤ 8 KiB", sc.ControlBytesPerPeerRound)
	case sc.RaftEntriesPerRound > peers/4:
		t.Fatalf("%.0f Raft entries per round for %d peers' receipts", sc.RaftEntriesPerRound, peers)
	}
}
