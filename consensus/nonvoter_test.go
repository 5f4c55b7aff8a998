package consensus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestNonvotersFollowButNeverLead: two non-voters added to three voters apply every entry and
// hold the voters' state hash, Servers names each server's suffrage, a voter is not demoted by
// AddNonvoter, the non-voters never become leader when voters die, and do not make a quorum: with
// two of three voters gone nothing commits although three of five servers are up.
func TestNonvotersFollowButNeverLead(t *testing.T) {
	ids := []string{"v1", "v2", "v3", "a1", "a2"}
	trans := map[string]*raft.InmemTransport{}
	for _, id := range ids {
		_, trans[id] = raft.NewInmemTransport(raft.ServerAddress(id))
	}
	for a, ta := range trans {
		for b, tb := range trans {
			if a != b {
				ta.Connect(raft.ServerAddress(b), tb)
			}
		}
	}
	var voters []Peer
	for _, id := range ids[:3] {
		voters = append(voters, Peer{ID: id, Addr: id, Suffrage: Voter})
	}
	c := &cluster{nodes: map[string]*Node{}}
	for _, p := range voters {
		c.set(newInmemNode(t, p.ID, voters, trans[p.ID]))
	}
	for _, id := range ids[3:] {
		c.set(newInmemNode(t, id, nil, trans[id]))
	}
	defer func() {
		for _, n := range c.live() {
			_ = n.Shutdown()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := c.waitLeader(t, 5*time.Second)
	for _, id := range ids[3:] {
		if err := l.AddNonvoter(ctx, id, id); err != nil {
			t.Fatalf("add non-voter %s: %v", id, err)
		}
	}
	if err := l.AddNonvoter(ctx, "v2", "v2"); !errors.Is(err, ErrConfig) {
		t.Fatalf("AddNonvoter of a voter: %v, want ErrConfig", err)
	}
	servers, err := l.Servers()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Suffrage{}
	for _, sv := range servers {
		got[sv.ID] = sv.Suffrage
	}
	want := map[string]Suffrage{"v1": Voter, "v2": Voter, "v3": Voter, "a1": Nonvoter, "a2": Nonvoter}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("suffrages %v, want %v", got, want)
	}

	if _, err := c.bootstrap(ctx, mustEnv(t, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		m := fmt.Sprintf("m%d", i)
		if _, err := c.apply(ctx, mustEnv(t, m, 1, &RegisterBody{PublicKey: testPub(m), Name: m, Contributors: []string{m + "-data"}})); err != nil {
			t.Fatal(err)
		}
	}
	hashes := c.waitConverged(t, 10*time.Second)
	if len(hashes) != 5 {
		t.Fatalf("%d nodes converged, want 5", len(hashes))
	}
	sameHashes(t, hashes)
	for _, id := range ids {
		if v := c.nodes[id].Voter(); v != (id[0] == 'v') {
			t.Fatalf("%s: Voter() = %v", id, v)
		}
	}

	// Kill voters one after another: a voter takes over, never a non-voter.
	kill := func(n *Node) {
		c.remove(n.ID())
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
		for _, tr := range trans {
			tr.Disconnect(raft.ServerAddress(n.ID()))
		}
	}
	kill(c.waitLeader(t, 5*time.Second))
	l = c.waitLeader(t, 5*time.Second)
	if l.ID()[0] != 'v' {
		t.Fatalf("non-voter %s became leader", l.ID())
	}
	if _, err := c.apply(ctx, mustEnv(t, "late", 1, &RegisterBody{PublicKey: testPub("late"), Name: "late"})); err != nil {
		t.Fatalf("commit with two of three voters: %v", err)
	}
	kill(l)
	// One voter and two non-voters: three of the five servers, but one of three votes.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.live() {
			if n.IsLeader() {
				t.Fatalf("%s became leader with one voter of three", n.ID())
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}
