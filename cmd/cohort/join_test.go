package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator"
	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/internal/netutil"
	"github.com/cohortlab/cohort/protocol"
)

// startCoordinator runs a one-node in-process coordinator cluster and returns its address.
func startCoordinator(t *testing.T) string {
	t.Helper()
	return startCoordinatorWith(t, nil)
}

// startCoordinatorWith is startCoordinator with edit applied to the node's config (if not nil).
func startCoordinatorWith(t *testing.T, edit func(*coordinator.Config)) string {
	t.Helper()
	sk, err := netutil.Listen()
	if err != nil {
		t.Fatal(err)
	}
	addr := sk.Addr()
	cfg := coordinator.Config{ID: "c1", InMemory: true, Listen: addr, PacketConn: sk.UDP, RaftListener: sk.TCP,
		Peers: []consensus.Peer{{ID: "c1", Addr: addr, Key: nodeIdentity(t, "c1").NodeID().String()}}, Identity: nodeIdentity(t, "c1"), Tick: 50 * time.Millisecond,
		Raft: consensus.Config{HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond}}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return addr
}

// TestJoinRefusesDataTheModelCannotTrainOn: `cohort join` with 10×10 images for a cohort whose
// model takes 28×28 ones fails at once with one line naming the file, the shape found and the
// shape needed — and commits nothing: the member is neither registered nor in the cohort.
func TestJoinRefusesDataTheModelCannotTrainOn(t *testing.T) {
	addr := startCoordinator(t)
	cl := cohortOf(t, addr, 100, "fmnist", "mlp:784-32-10", consensus.Hyperparams{InnerSteps: 5, Rounds: 2})
	bg := context.Background()

	dir := t.TempDir()
	shard := filepath.Join(dir, "small")
	if err := os.MkdirAll(shard, 0o755); err != nil {
		t.Fatal(err)
	}
	small := &datasets.Images{Name: "small", Rows: 10, Cols: 10, Classes: datasets.MNISTClasses,
		Pixels: make([]uint8, 3*10*10), Labels: []uint8{0, 4, 9}}
	if err := datasets.WriteImages(shard, "train", small); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "bob.key")
	if _, err := run(t, "keygen", "--out", key); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := run(t, "join", "--coordinator", addr, "--cohort", "1", "--key", key, "--data", shard, "--contributor", "bob")
	if err == nil {
		t.Fatal("join with 10x10 images for a 28x28 model: no error")
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{filepath.Join(shard, "train-images-idx3-ubyte.gz"), "10x10 images (100 features)",
		"mlp:784-32-10 takes 28x28 images (784 features)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refused after %s", d)
	}
	// Nothing was committed.
	q, err := cl.Query(bg, protocol.Query{What: protocol.QueryCohort, ID: 1, Linearizable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Cohort.Members) != 0 {
		t.Errorf("cohort 1 has members %+v after a refused join", q.Cohort.Members)
	}
	ms, err := cl.Query(bg, protocol.Query{What: protocol.QueryMembers})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms.Members {
		if m.Name == "bob" {
			t.Errorf("bob was registered by a refused join: %+v", m)
		}
	}
}

// fundAndGrant has the operator of startCoordinator's one-node cluster (its node key) fund the
// treasury with pool and grant each member a vote.
func fundAndGrant(t *testing.T, addr string, pool uint64, members ...*client.Client) {
	t.Helper()
	bg := context.Background()
	op, err := client.Dial(client.Config{Addrs: []string{addr}, Identity: nodeIdentity(t, "c1"), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	for _, m := range members {
		eventually(t, 10*time.Second, "grant", func() error {
			_, err := op.Submit(bg, &consensus.GrantBody{Member: m.ID(), Votes: 1})
			return err
		})
	}
	if _, err := op.Submit(bg, &consensus.FundBody{Amount: pool}); err != nil {
		t.Fatal(err)
	}
}

// cohortOf has alice, a funded member with a vote, propose model with params and pass it on the
// coordinator at addr, and waits for cohort 1 (minimum 2 members). It returns alice's client.
func cohortOf(t *testing.T, addr string, pool uint64, name, model string, params consensus.Hyperparams) *client.Client {
	t.Helper()
	cl := memberClient(t, []string{addr}, "alice")
	bg := context.Background()
	eventually(t, 10*time.Second, "register", func() error { return cl.EnsureRegistered(bg, "alice", []string{"alice"}) })
	fundAndGrant(t, addr, pool, cl)
	res, err := cl.Submit(bg, &consensus.ProposeBody{Name: name, Model: model, Dataset: "fashion-mnist",
		Params: params, RewardPool: pool, MinMembers: 2, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 300})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Submit(bg, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "cohort 1", func() error {
		_, err := cl.Query(bg, protocol.Query{What: protocol.QueryCohort, ID: 1})
		return err
	})
	return cl
}
