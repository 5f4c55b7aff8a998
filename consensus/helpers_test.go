package consensus

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math"
	"sort"
	"testing"
)

// testKey derives a deterministic key from a name: ed25519.NewKeyFromSeed(sha256(name)).
func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func testID(name string) string { return IDOf(testKey(name).Public().(ed25519.PublicKey)) }

func testPub(name string) []byte { return []byte(testKey(name).Public().(ed25519.PublicKey)) }

// mustEnv signs body with name's key.
func mustEnv(t testing.TB, name string, req uint64, body Body) Envelope {
	t.Helper()
	env, err := NewEnvelope(testKey(name), req, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// mustApply applies a signed command at time now and fails the test on error.
func mustApply(t testing.TB, s *State, now int64, name string, req uint64, body Body) Result {
	t.Helper()
	res, err := s.Apply(Command{Version: Version, Time: now, Env: mustEnv(t, name, req, body)})
	if err != nil {
		t.Fatalf("%s %s req %d: %v", name, body.Type(), req, err)
	}
	return res
}

// scenario returns a valid, deterministic command sequence for seed: coordinators, members, a
// funded treasury, granted votes, a proposal that passes, joins, and `rounds` rounds each with open, receipts, score and close. It is
// checked by applying it to a scratch state.
func scenario(t testing.TB, seed uint64, members int, rounds uint32) []Command {
	t.Helper()
	s := NewState()
	now := int64(1_000_000 + seed)
	req := map[string]uint64{}
	var cmds []Command
	add := func(name string, b Body) {
		req[name]++
		c := Command{Version: Version, Time: now, Env: mustEnv(t, name, req[name], b)}
		if _, err := s.Apply(c); err != nil {
			t.Fatalf("scenario %d: %s %s: %v", seed, name, b.Type(), err)
		}
		cmds = append(cmds, c)
		now++
	}
	add("c1", &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1", Initial: []ApprovedCoordinator{{ID: testID("c2"), Name: "c2"}}})
	add("c2", &AddCoordinatorBody{PublicKey: testPub("c2"), Name: "c2"})
	var ids []string
	for i := 0; i < members; i++ {
		m := fmt.Sprintf("s%d-m%d", seed, i)
		ids = append(ids, testID(m))
		add(m, &RegisterBody{PublicKey: testPub(m), Name: m, Contributors: []string{m + "/a", m + "/b"}})
	}
	sort.Strings(ids)
	// Operator commands take both coordinators' signatures (a majority of two).
	add("c1", &FundBody{Amount: 2_000_000 + seed})
	add("c2", &FundBody{Amount: 2_000_000 + seed})
	for i := 0; i < members; i++ {
		add("c1", &GrantBody{Member: testID(fmt.Sprintf("s%d-m%d", seed, i)), Votes: 1})
		add("c2", &GrantBody{Member: testID(fmt.Sprintf("s%d-m%d", seed, i)), Votes: 1})
	}
	m0 := fmt.Sprintf("s%d-m0", seed)
	add(m0, &ProposeBody{Name: "p", Model: "mlp:784-256-10", Dataset: "fashion-mnist", ValidationHash: []byte("v"),
		Params:     Hyperparams{InnerSteps: 50, Rounds: rounds, Codec: "topk:0.05+int8", OuterLR: "0.7", OuterMomentum: "0.9"},
		RewardPool: 1_000_000 + seed, MinMembers: 1, QuorumBP: 2000, ThresholdBP: 5000, VotingPeriodMs: 1000})
	for i := 0; i < members; i++ {
		add(fmt.Sprintf("s%d-m%d", seed, i), &VoteBody{Proposal: 1, Yes: i%3 != 2})
	}
	now += 1000
	add("c1", &TallyBody{Proposal: 1})
	for i := 0; i < members; i++ {
		m := fmt.Sprintf("s%d-m%d", seed, i)
		add(m, &JoinBody{Cohort: 1, Contributors: []ContributorData{
			{Name: m + "/a", Fingerprint: []byte{byte(i), byte(seed)}, Samples: uint64(10 + i)},
			{Name: m + "/b", Fingerprint: []byte{byte(i % 3)}, Samples: uint64(20 + i)}}})
	}
	hash := []byte("m0")
	for r := uint32(1); r <= rounds; r++ {
		add("c2", &OpenRoundBody{Cohort: 1, Number: r, Participants: ids,
			Slices:    []SliceAssignment{{Start: 0, End: 100, Aggregator: testID("c1")}, {Start: 100, End: 200, Aggregator: testID("c2")}},
			ModelHash: hash, Seed: seed*1000 + uint64(r), Deadline: now + 1000})
		for i := 0; i < members; i++ {
			add(fmt.Sprintf("s%d-m%d", seed, i), &ReceiptBody{Cohort: 1, Round: r, SamplesUsed: uint64(30 + i),
				BytesSent: uint64(1000 * (i + 1)), ModelHashAfter: []byte("after")})
		}
		var data, compute []Weight
		for i := 0; i < members; i++ {
			m := fmt.Sprintf("s%d-m%d", seed, i)
			a, b := ContributorKey(testID(m), m+"/a"), ContributorKey(testID(m), m+"/b")
			data = append(data, Weight{Contributor: a, Weight: (seed*31 + uint64(i)*17 + uint64(r)) % 7})
			compute = append(compute, Weight{Contributor: a, Weight: uint64(10 + i)}, Weight{Contributor: b, Weight: uint64(20 + i)})
		}
		sort.Slice(data, func(i, j int) bool { return data[i].Contributor < data[j].Contributor })
		sort.Slice(compute, func(i, j int) bool { return compute[i].Contributor < compute[j].Contributor })
		hash = []byte(fmt.Sprintf("m%d", r))
		add("c1", &CloseRoundBody{Cohort: 1, Round: r, ModelHash: hash})
		add("c1", &ScoreCommitBody{Cohort: 1, Round: r, Data: data, Compute: compute})
	}
	return cmds
}

// applyAll applies commands to a fresh state.
func applyAll(t testing.TB, cmds []Command) *State {
	t.Helper()
	s := NewState()
	for i, c := range cmds {
		if _, err := s.Apply(c); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	return s
}

// looseLimits are limits wide enough for tests that make many proposals, many rounds or big pools.
var looseLimits = Limits{MaxRounds: 1 << 31, MaxRewardPool: math.MaxUint64, MaxOpenProposals: math.MaxUint32,
	MaxOpenProposalsPerMember: math.MaxUint32}

// testProposal returns a proposal body every state accepts from a member with vote weight (the
// reward pool needs a funded treasury).
func testProposal(name string, rounds uint32, pool uint64, period int64) *ProposeBody {
	return &ProposeBody{Name: name, Model: "mlp:784-16-10", Dataset: "d",
		Params: Hyperparams{Rounds: rounds, InnerSteps: 10}, RewardPool: pool,
		QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: period}
}
