package consensus

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestRandomCommandsAtomicAndReplayable applies a seeded random mix of valid and invalid commands
// from several issuers to a state. Checked after each: a rejected command leaves the state's Hash
// unchanged (handlers validate before they mutate); and at the end a state restored from a
// snapshot taken half way, fed the rest, has the same Hash as the uninterrupted one.
func TestRandomCommandsAtomicAndReplayable(t *testing.T) {
	n := 1500
	if testing.Short() {
		n = 400
	}
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			base := scenario(t, seed, 3, 2)
			s := applyAll(t, base)
			names := []string{"c1", "c2", "mallory"}
			for i := 0; i < 3; i++ {
				names = append(names, fmt.Sprintf("s%d-m%d", seed, i))
			}
			ids := []string{}
			for _, nm := range names {
				ids = append(ids, testID(nm))
			}
			now := base[len(base)-1].Time
			req := map[string]uint64{}
			pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
			contrib := func() string {
				m0, m1 := fmt.Sprintf("s%d-m0", seed), fmt.Sprintf("s%d-m1", seed)
				return pick([]string{ContributorKey(testID(m0), m0+"/a"), ContributorKey(testID(m1), m1+"/b"), m0 + "/a", "ghost", ""})
			}
			var cmds []Command
			accepted, rejected := 0, 0
			var mid []byte
			for i := 0; i < n; i++ {
				now += int64(rng.IntN(400))
				cohort := uint64(rng.IntN(3))
				round := uint32(rng.IntN(5))
				var body Body
				self := "" // the issuer, when the body names its own key
				switch rng.IntN(13) {
				case 0:
					self = fmt.Sprintf("new%d", rng.IntN(40))
					body = &RegisterBody{PublicKey: testPub(self), Name: self, Contributors: []string{self + "/x" + fmt.Sprint(rng.IntN(3))}}
				case 1:
					body = &ProposeBody{Name: "p", Model: pick([]string{"mlp", "mlp:784-100000000-10", "m", "gpt:2-64-4-32"}),
						Dataset: "d", Params: Hyperparams{Rounds: uint32(rng.IntN(4)), InnerSteps: uint32(rng.IntN(3))},
						RewardPool: rng.Uint64N(1000), MinMembers: uint32(rng.IntN(3)), QuorumBP: uint32(rng.IntN(11000)),
						ThresholdBP: uint32(rng.IntN(11000)), VotingPeriodMs: int64(rng.IntN(2000)), MaxMembers: uint32(rng.IntN(4))}
				case 2:
					body = &VoteBody{Proposal: uint64(rng.IntN(5)), Yes: rng.IntN(2) == 0}
				case 3:
					body = &TallyBody{Proposal: uint64(rng.IntN(5))}
				case 4:
					body = &JoinBody{Cohort: cohort, Contributors: []ContributorData{{Name: contrib(),
						Fingerprint: []byte{byte(rng.IntN(3))}, Samples: rng.Uint64N(3)}}}
				case 5:
					parts := []string{}
					if rng.IntN(4) != 0 {
						parts = append(parts, pick(ids))
					}
					body = &OpenRoundBody{Cohort: cohort, Number: round, Participants: parts,
						Slices:    []SliceAssignment{{Start: 0, End: uint64(rng.IntN(3)), Aggregator: pick(ids)}},
						ModelHash: []byte(fmt.Sprintf("m%d", rng.IntN(4))), Deadline: now + int64(rng.IntN(1000)) - 100}
				case 6:
					body = &ReceiptBody{Cohort: cohort, Round: round, SamplesUsed: rng.Uint64N(100)}
				case 7:
					body = &ScoreCommitBody{Cohort: cohort, Round: round,
						Data:    []Weight{{Contributor: contrib(), Weight: rng.Uint64N(5)}},
						Compute: []Weight{{Contributor: contrib(), Weight: rng.Uint64N(5)}}}
				case 8:
					body = &CloseRoundBody{Cohort: cohort, Round: round, ModelHash: []byte(fmt.Sprintf("m%d", rng.IntN(4)))}
				case 9:
					body = &AddCoordinatorBody{PublicKey: testPub(pick(names)), Name: "x"}
				case 10:
					body = &FundBody{Amount: rng.Uint64N(3) << (rng.IntN(2) * 63)}
				case 11:
					body = &GrantBody{Member: pick(ids), Votes: rng.Uint64N(3) << (rng.IntN(2) * 63)}
				case 12:
					body = &SetLimitsBody{Limits: Limits{MaxCohortMembers: uint32(rng.IntN(3) * 2100), MaxMembers: uint32(rng.IntN(12)),
						MaxOpenProposalsPerMember: uint32(rng.IntN(3))}}
				}
				nm := pick(names)
				if rng.IntN(5) != 0 { // mostly an issuer of the right kind
					if body.Type().coordinatorOnly() {
						nm = pick(names[:2])
					} else {
						nm = pick(names[3:])
					}
				}
				if self != "" && rng.IntN(5) != 0 {
					nm = self
				}
				req[nm]++
				id := req[nm] + 100
				if rng.IntN(10) == 0 && id > 101 {
					id -= uint64(rng.IntN(3)) // sometimes a retry of a recent request ID
				}
				env := mustEnv(t, nm, id, body)
				if rng.IntN(15) == 0 {
					env.Sig[3] ^= 0x10
				}
				c := Command{Version: Version, Time: now, Env: env}
				// Hash is cached between changes: compare the snapshot bytes themselves.
				before, _ := s.MarshalSnapshot()
				res, err := s.Apply(c)
				if err != nil {
					rejected++
					if after, _ := s.MarshalSnapshot(); !bytes.Equal(after, before) {
						t.Fatalf("command %d (%s by %s) was rejected (%v) but changed the state", i, body.Type(), nm, err)
					}
				} else if !res.Duplicate {
					accepted++
				}
				cmds = append(cmds, c)
				if i == n/2 {
					var err error
					if mid, err = s.MarshalSnapshot(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if accepted < n/20 || rejected < n/4 {
				t.Fatalf("unbalanced mix: %d accepted, %d rejected of %d", accepted, rejected, n)
			}
			r, err := UnmarshalSnapshot(mid)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cmds[n/2+1:] {
				_, _ = r.Apply(c)
			}
			if r.Hash() != s.Hash() {
				t.Fatal("restore half way + replay differs from the uninterrupted state")
			}
			t.Logf("%d accepted, %d rejected", accepted, rejected)
		})
	}
}
