package consensus

import (
	"fmt"
	"testing"
)

// A batch with forged signatures in it: batch verification fails, the batch is verified one by
// one, and exactly the forged ones are left for Apply to refuse — however the batch is cut.
func TestPreverifyFindsTheForgedOnes(t *testing.T) {
	for _, workers := range []int{1, 2, 3, 8} {
		s := NewState()
		mustApply(t, s, 1, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
		mustApply(t, s, 1, "c1", 2, &SetLimitsBody{Limits: looseLimits})
		var cmds []*Command
		forged := map[int]bool{5: true, 37: true, 63: true}
		for i := 0; i < 64; i++ {
			name := fmt.Sprintf("m%d", i)
			mustApply(t, s, 2, name, 1, &RegisterBody{PublicKey: testPub(name), Name: name})
			mustApply(t, s, 2, "c1", uint64(3+i), &GrantBody{Member: testID(name), Votes: 1})
			env := mustEnv(t, name, 2, testProposal("p", 1, 0, 10))
			if forged[i] {
				env.Sig[3] ^= 1
			}
			cmds = append(cmds, &Command{Env: env, Time: 3})
		}
		s.preverify(cmds, workers)
		if len(s.preverified) != 64-len(forged) {
			t.Fatalf("%d workers: %d preverified, want %d", workers, len(s.preverified), 64-len(forged))
		}
		for i, c := range cmds {
			_, err := s.Apply(*c)
			if forged[i] != (err != nil) {
				t.Fatalf("%d workers: command %d (forged %v): %v", workers, i, forged[i], err)
			}
		}
		s.clearPreverified()
	}
}
