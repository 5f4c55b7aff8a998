package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
)

// A registered coordinator that is not the leader cannot write rounds or the ledger: its signed
// ScoreCommit paying an accomplice, and its OpenRound, are refused before the log.
func TestFollowerCoordinatorCannotIssueRoundCommands(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	follower := ""
	for _, s := range c.servers {
		if !s.Node().IsLeader() {
			follower = s.cfg.ID
		}
	}
	alice := newClient(t, c, "alice")
	if err := alice.EnsureRegistered(ctx, "alice", []string{"alice-data"}); err != nil {
		t.Fatal(err)
	}
	rogue, err := client.Dial(client.Config{Addrs: c.addrs, Identity: testIdentity(t, follower), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	for _, body := range []consensus.Body{
		&consensus.ScoreCommitBody{Cohort: 1, Round: 1, Data: []consensus.Weight{{Contributor: "alice-data", Weight: 1}}},
		&consensus.OpenRoundBody{Cohort: 1, Number: 1, Participants: []string{alice.ID()}, ModelHash: []byte("m"), Deadline: 1 << 50},
		&consensus.TallyBody{Proposal: 1},
	} {
		_, err := rogue.Submit(ctx, body)
		if err == nil || !strings.Contains(err.Error(), "only the leader") {
			t.Fatalf("%s from follower %s: %v, want a refusal", body.Type(), follower, err)
		}
	}
	// The cluster still serves the member.
	if _, err := alice.Query(ctx, protocol.Query{What: protocol.QueryLedger, Linearizable: true}); err != nil {
		t.Fatal(err)
	}
}

// A dead voter is removed by a majority of the operators; the leader drops it from Raft, and its
// key no longer opens a Raft connection.
func TestMajorityRemovesADeadCoordinator(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	victim := -1
	for i, s := range c.servers {
		if !s.Node().IsLeader() {
			victim = i
		}
	}
	gone := c.servers[victim]
	c.cancels[victim]()
	gone.Close()
	var others []string
	for i, s := range c.servers {
		if i != victim {
			others = append(others, s.cfg.ID)
		}
	}
	var live []*Server
	for i, s := range c.servers {
		if i != victim {
			live = append(live, s)
		}
	}
	cl, err := client.Dial(client.Config{Addrs: []string{c.addrs[(victim+1)%3], c.addrs[(victim+2)%3]}, Identity: testIdentity(t, others[0]), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// One operator alone cannot remove it.
	res, err := cl.Submit(ctx, &consensus.ApproveCoordinatorBody{ID: gone.KeyID(), Remove: true})
	if err != nil || res.Status != "pending" {
		t.Fatalf("first signature: %+v, %v", res, err)
	}
	cl2, err := client.Dial(client.Config{Addrs: []string{c.addrs[(victim+1)%3], c.addrs[(victim+2)%3]}, Identity: testIdentity(t, others[1]), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if res, err := cl2.Submit(ctx, &consensus.ApproveCoordinatorBody{ID: gone.KeyID(), Remove: true}); err != nil || res.Status != "removed" {
		t.Fatalf("second signature: %+v, %v", res, err)
	}
	waitFor(t, 15*time.Second, "voter removed everywhere", func() bool {
		for _, s := range live {
			st := s.Status()
			if len(st.Servers) != 2 || len(st.Coordinators) != 2 {
				return false
			}
		}
		return true
	})
	for _, s := range live {
		if err := s.raftAllowed(gone.cfg.Identity.NodeID()); err == nil {
			t.Fatalf("%s still admits the removed key to Raft", s.cfg.ID)
		}
	}
	// Two voters of two: writes go on.
	alice, err := client.Dial(client.Config{Addrs: []string{c.addrs[(victim+1)%3], c.addrs[(victim+2)%3]}, Identity: testIdentity(t, "alice"), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if err := alice.EnsureRegistered(ctx, "alice", []string{"alice-data"}); err != nil {
		t.Fatal(err)
	}
}
