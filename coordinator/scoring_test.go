package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// quietServer starts a single-node coordinator without running its loop (no ticks: nothing
// opens, scores or closes rounds behind the test's back), registered as the cluster's first
// coordinator.
func quietServer(t *testing.T) *Server {
	t.Helper()
	sk := bound(t)
	addr := sk.Addr()
	s, err := New(Config{ID: "c1", Dir: t.TempDir(), Listen: addr, PacketConn: sk.UDP, RaftListener: sk.TCP, Peers: []consensus.Peer{{ID: "c1", Addr: addr, Key: testIdentity(t, "c1").NodeID().String()}},
		Identity: testIdentity(t, "c1"), Raft: fastRaft()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	waitFor(t, 10*time.Second, "registered", func() bool {
		if !s.registered() {
			_ = s.registerSelf(ctx)
		}
		return s.registered()
	})
	return s
}

// memberApply signs body with the test identity of name and applies it on s.
func memberApply(t *testing.T, s *Server, name string, req uint64, body consensus.Body) consensus.Result {
	t.Helper()
	env, err := consensus.NewEnvelope(testIdentity(t, name).Key, req, body)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.node.Apply(context.Background(), env)
	if err != nil {
		t.Fatalf("%s %s: %v", name, body.Type(), err)
	}
	return res
}

// closedRound takes a quiet server to a cohort of alice whose round n is closed with her receipt
// (claiming samples); it opens rounds 1..n.
func closedRound(t *testing.T, s *Server, n uint32, samples uint64) {
	t.Helper()
	ctx := context.Background()
	self := func(b consensus.Body) {
		t.Helper()
		if _, err := s.applyAsSelf(ctx, b); err != nil {
			t.Fatalf("%s: %v", b.Type(), err)
		}
	}
	if n == 1 {
		alice := testIdentity(t, "alice")
		memberApply(t, s, "alice", 1, &consensus.RegisterBody{PublicKey: alice.PublicKey(), Name: "alice", Contributors: []string{"alice"}})
		self(&consensus.FundBody{Amount: 1000})
		self(&consensus.GrantBody{Member: alice.NodeID().String(), Votes: 1})
		p := memberApply(t, s, "alice", 2, &consensus.ProposeBody{Name: "p", Model: "mlp:784-16-10", Dataset: "fashion-mnist",
			Params: consensus.Hyperparams{InnerSteps: 5, Rounds: 2}, RewardPool: 1000, MinMembers: 1,
			QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 300})
		memberApply(t, s, "alice", 3, &consensus.VoteBody{Proposal: p.ID, Yes: true})
		time.Sleep(400 * time.Millisecond)
		self(&consensus.TallyBody{Proposal: p.ID})
		memberApply(t, s, "alice", 4, &consensus.JoinBody{Cohort: 1, Contributors: []consensus.ContributorData{
			{Name: "alice", Fingerprint: []byte("fp"), Samples: 1_000_000}}})
	}
	alice := testIdentity(t, "alice").NodeID().String()
	prev := []byte("m0")
	if n > 1 {
		prev = []byte{'m', byte('0' + n - 1)}
	}
	self(&consensus.OpenRoundBody{Cohort: 1, Number: n, Participants: []string{alice},
		Slices:    []consensus.SliceAssignment{{Start: 0, End: 12730, Aggregator: s.KeyID()}},
		ModelHash: prev, Deadline: time.Now().Add(time.Hour).UnixMilli()})
	memberApply(t, s, "alice", uint64(10+n), &consensus.ReceiptBody{Cohort: 1, Round: n, SamplesUsed: samples})
	self(&consensus.CloseRoundBody{Cohort: 1, Round: n, ModelHash: []byte{'m', byte('0' + n)}})
}

func roundOf(t *testing.T, s *Server, n uint32) (r consensus.Round, pool consensus.Pool) {
	t.Helper()
	s.node.View(func(st *consensus.State) error {
		var err error
		r, err = st.Round(1, n)
		pool = st.Ledger().Pools[0]
		return err
	})
	return r, pool
}

// A ScoreCommit the state refuses for good is recorded as the round unscored, with the refusal as
// its note, so that the later rounds (scored in order) are still paid, the carried budget with them.
func TestRefusedScoreCommitRecordsTheRoundUnscored(t *testing.T) {
	s := quietServer(t)
	ctx := context.Background()
	closedRound(t, s, 1, 100)
	bad := &consensus.ScoreCommitBody{Cohort: 1, Round: 1, Data: []consensus.Weight{{Contributor: "ghost", Weight: 1}}}
	res, err := s.commitScore(ctx, bad)
	if err != nil {
		t.Fatalf("commit of refused scores: %v", err)
	}
	r, pool := roundOf(t, s, 1)
	if !r.Scored || r.Paid != 0 || !strings.Contains(r.ScoreNote, "refused") || !strings.Contains(r.ScoreNote, "ghost") {
		t.Fatalf("round 1 after a refused commit: scored %v paid %d note %q (result %+v)", r.Scored, r.Paid, r.ScoreNote, res)
	}
	if pool.Carry != 500 || pool.LastScored != 1 {
		t.Fatalf("pool after round 1: %+v, want carry 500", pool)
	}
	// A commit the state refuses as not scorable yet is not replaced: round 2 is still open.
	env := &consensus.OpenRoundBody{Cohort: 1, Number: 2, Participants: []string{testIdentity(t, "alice").NodeID().String()},
		Slices:    []consensus.SliceAssignment{{Start: 0, End: 12730, Aggregator: s.KeyID()}},
		ModelHash: []byte("m1"), Deadline: time.Now().Add(time.Hour).UnixMilli()}
	if _, err := s.applyAsSelf(ctx, env); err != nil {
		t.Fatal(err)
	}
	if _, err := s.commitScore(ctx, &consensus.ScoreCommitBody{Cohort: 1, Round: 2}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("score of an open round: %v, want a wrong-status refusal", err)
	}
	if r, _ := roundOf(t, s, 2); r.Scored {
		t.Fatal("an open round was recorded scored")
	}
	if _, err := s.applyAsSelf(ctx, &consensus.CloseRoundBody{Cohort: 1, Round: 2, ModelHash: []byte("m2")}); err != nil {
		t.Fatal(err)
	}
	alice := consensus.ContributorKey(testIdentity(t, "alice").NodeID().String(), "alice")
	good := &consensus.ScoreCommitBody{Cohort: 1, Round: 2, Data: []consensus.Weight{{Contributor: alice, Weight: 1}},
		Compute: []consensus.Weight{{Contributor: alice, Weight: 1}}}
	if res, err := s.commitScore(ctx, good); err != nil || res.Amount != 1000 {
		t.Fatalf("round 2: %+v, %v; want the whole pool (its budget and round 1's carry) paid", res, err)
	}
}

// Compute weights come from the protocol: a receipt's samples count up to the cap the state
// fixes (inner steps × MaxBatch, and the member's registered data), however much it claims.
func TestParticipantsSamplesAreCappedByTheProtocol(t *testing.T) {
	s := quietServer(t)
	closedRound(t, s, 1, math.MaxUint64)
	r, _ := roundOf(t, s, 1)
	var c consensus.Cohort
	s.node.View(func(st *consensus.State) error { c, _ = st.Cohort(1); return nil })
	want := uint64(5 * consensus.DefaultMaxBatch)
	if r.Receipts[0].SamplesUsed != want || r.Receipts[0].Claimed != math.MaxUint64 {
		t.Fatalf("receipt as recorded: %+v, want %d samples counted", r.Receipts[0], want)
	}
	// Even a receipt that reached scoring unclamped (an older state) counts no more than the cap.
	r.Receipts[0].SamplesUsed = math.MaxUint64
	parts := s.participants(c, r, nil, nil)
	if len(parts) != 1 || parts[0].Samples != want {
		t.Fatalf("participants: %+v, want 1 with %d samples", parts, want)
	}
}

// The validation sums of a round of many participants cross the wire as a payload: with 1,000
// participants (sketched) the MsgScore reply is megabytes, which the frame header (64 KiB) could
// never hold, and the leader decodes it back bit for bit.
func TestScoreReplyOfManyParticipants(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const P, K, n = 1000, 8, 512
	members := make([]string, P)
	updates := make([][]float32, P)
	for i := range members {
		members[i] = fmt.Sprintf("%052x", i*7919) // the length of a key ID
	}
	slices.Sort(members)
	g := make([][]float32, K)
	for k := range g {
		g[k] = make([]float32, n)
		for j := range g[k] {
			g[k][j] = float32(math.Sin(float64(k*n + j)))
		}
	}
	for i := range updates {
		updates[i] = make([]float32, n)
		for j := range updates[i] {
			updates[i][j] = float32(math.Cos(float64(i*7 + j*i)))
		}
	}
	sl := consensus.SliceAssignment{Start: 4096, End: 4096 + n}
	sk := attribution.SketchFor(P, 42, []byte("theta-next"))
	want, err := attribution.ComputePartial(sl.Start, sl.End, g, nil, members, updates, sk)
	if err != nil {
		t.Fatal(err)
	}
	// As a header body (what a reply carried before), the sums do not fit a frame.
	var old transport.Header
	if err := old.SetBody(want); err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteMessage(io.Discard, old, nil); !errors.Is(err, transport.ErrHeaderTooLarge) {
		t.Fatalf("the sums as a header body: %v, want ErrHeaderTooLarge", err)
	}

	aggID, leaderID := testIdentity(t, "agg"), testIdentity(t, "leader")
	mux := transport.NewMux()
	mux.Handle(MsgScore, func(ctx context.Context, _ transport.NodeID, req transport.Message) (transport.Message, error) {
		var q ScoreRequest
		if err := req.DecodeBody(&q); err != nil {
			return transport.Message{}, err
		}
		return scoreReply(want)
	}, transport.Limit{})
	sk0 := bound(t)
	ep, err := transport.Listen(sk0.UDP, transport.Config{Identity: aggID})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	go ep.Serve(ctx, mux)
	conn, err := transport.Dial(ctx, sk0.Addr(), transport.Config{Identity: leaderID})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := transport.Message{Header: transport.Header{Type: MsgScore, ID: 1}}
	if err := req.SetBody(ScoreRequest{Cohort: 1, Round: 2, Slice: 0}); err != nil {
		t.Fatal(err)
	}
	reply, err := transport.Call(ctx, conn, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Body) != 0 || len(reply.Payload) < 1<<20 {
		t.Fatalf("reply: %d header body bytes, %d payload bytes; want none and the sums", len(reply.Body), len(reply.Payload))
	}
	got, err := decodeScoreReply(reply, sl, sk)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Members, want.Members) || !slices.Equal(got.GD, want.GD) || !slices.Equal(got.S, want.S) || !slices.Equal(got.NormSq, want.NormSq) {
		t.Fatal("the sums differ after the wire")
	}
	if _, err := decodeScoreReply(reply, sl, attribution.Sketch{}); err == nil {
		t.Fatal("a reply sketched otherwise than the round says was accepted")
	}
	if _, err := decodeScoreReply(reply, consensus.SliceAssignment{Start: 0, End: n}, sk); err == nil {
		t.Fatal("a reply for another slice was accepted")
	}
}

// roundSketch: exact up to attribution.ExactGramMax participants; beyond, a sketch only once the
// round's close (θ_{t+1}'s hash) is applied, the same on every replica that applied it.
func TestRoundSketch(t *testing.T) {
	many := make([]string, attribution.ExactGramMax+1)
	for i := range many {
		many[i] = fmt.Sprintf("m%03d", i)
	}
	closed := consensus.Round{Number: 3, Participants: many, Seed: 5, Status: consensus.RoundClosed, NewModelHash: []byte("h")}
	for _, tc := range []struct {
		name    string
		r       consensus.Round
		want    attribution.Sketch
		unavail bool
	}{
		{"few, open", consensus.Round{Participants: many[:attribution.ExactGramMax], Status: consensus.RoundOpen}, attribution.Sketch{}, false},
		{"many, open", consensus.Round{Participants: many, Status: consensus.RoundOpen}, attribution.Sketch{}, true},
		{"many, closed", closed, attribution.SketchFor(len(many), 5, []byte("h")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := roundSketch(tc.r)
			if tc.unavail != errors.Is(err, protocol.ErrUnavailable) || (err != nil) != tc.unavail {
				t.Fatalf("err %v, want unavailable %v", err, tc.unavail)
			}
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUnreported(t *testing.T) {
	r := consensus.Round{Receipts: []consensus.Receipt{{Member: "a"}, {Member: "c"}}}
	parts := []attribution.Partial{{Members: []string{"a", "b", "c", "d"}}, {Members: []string{"a", "b", "c"}}}
	// d's update reached one slice only: it sends no receipt, and is not waited for.
	if got := unreported(r, parts); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("unreported = %v, want [b]", got)
	}
	if got := unreported(r, nil); got != nil {
		t.Fatalf("no partials: %v", got)
	}
}
