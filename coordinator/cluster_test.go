package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/netutil"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// bound binds a coordinator's sockets — TCP and UDP at one 127.0.0.1 port, held — for
// Config.RaftListener and PacketConn: no port is picked, released and hoped for. The test closes
// them at the end if no Server took them over.
func bound(t *testing.T) netutil.Sockets {
	t.Helper()
	s, err := netutil.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testIdentity(t *testing.T, name string) *transport.Identity {
	seed := sha256.Sum256([]byte(name))
	id, err := transport.NewIdentity(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func fastRaft() consensus.Config {
	return consensus.Config{HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond}
}

type cluster struct {
	servers []*Server
	cancels []context.CancelFunc
	addrs   []string
	wg      sync.WaitGroup
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with each node's Config changed by tune (if not nil).
func startClusterWith(t *testing.T, n int, tune func(*Config)) *cluster {
	t.Helper()
	c := &cluster{}
	var peers []consensus.Peer
	var socks []netutil.Sockets
	for i := 0; i < n; i++ {
		sk := bound(t)
		a := sk.Addr()
		socks = append(socks, sk)
		c.addrs = append(c.addrs, a)
		name := fmt.Sprintf("c%d", i+1)
		peers = append(peers, consensus.Peer{ID: name, Addr: a, Key: testIdentity(t, name).NodeID().String()})
	}
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		cfg := Config{ID: peers[i].ID, Dir: fmt.Sprintf("%s/%s", dir, peers[i].ID), Listen: c.addrs[i],
			PacketConn: socks[i].UDP, RaftListener: socks[i].TCP, Peers: peers, Identity: testIdentity(t, peers[i].ID), Raft: fastRaft(), Tick: 50 * time.Millisecond}
		if tune != nil {
			tune(&cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.servers = append(c.servers, s)
		c.cancels = append(c.cancels, cancel)
		c.wg.Add(1)
		go func() { defer c.wg.Done(); s.Run(ctx) }()
	}
	t.Cleanup(func() {
		for _, cancel := range c.cancels {
			cancel()
		}
		c.wg.Wait()
		for _, s := range c.servers {
			s.Close()
		}
	})
	// Every node registers its key with the leader.
	waitFor(t, 30*time.Second, "all coordinators registered", func() bool {
		for _, s := range c.servers {
			if len(s.Status().Coordinators) != n {
				return false
			}
		}
		return true
	})
	return c
}

func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newClient(t *testing.T, c *cluster, name string) *client.Client {
	cl, err := client.Dial(client.Config{Addrs: c.addrs, Identity: testIdentity(t, name), Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func TestProposeVoteTallyOverQUIC(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	alice, bob := newClient(t, c, "alice"), newClient(t, c, "bob")
	for _, m := range []struct {
		cl   *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		if err := m.cl.EnsureRegistered(ctx, m.name, []string{m.name}); err != nil {
			t.Fatalf("register %s: %v", m.name, err)
		}
	}
	operate(t, c.addrs, 1_000_000, alice, bob)
	// A proposal no peer could train with is refused before it reaches the log, naming the field,
	// and the refusal is final (the client does not retry it at another coordinator).
	_, err := alice.Submit(ctx, &consensus.ProposeBody{Name: "bad", Model: "mlp:784-256-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 50, Rounds: 10, Codec: "topk:0.01+q4", ErrorDecay: "2"}, RewardPool: 1,
		MinMembers: 2, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 3000})
	if err == nil || !strings.Contains(err.Error(), "error decay") || strings.Contains(err.Error(), "no coordinator answered") {
		t.Fatalf("proposal with error decay 2: %v", err)
	}
	res, err := alice.Submit(ctx, &consensus.ProposeBody{Name: "fmnist-mlp", Model: "mlp:784-256-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 50, Rounds: 10, Codec: "topk:0.01+q4", OuterLR: "1", OuterMomentum: "0.8", ErrorDecay: "0.9"}, RewardPool: 1_000_000,
		MinMembers: 2, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 3000})
	if err != nil {
		t.Fatal(err)
	}
	pid := res.ID
	// The votes must land inside the 3 s voting period: generous, since a loaded machine
	// delays each submit (800 ms once expired before the second vote arrived).
	for _, cl := range []*client.Client{alice, bob} {
		if _, err := cl.Submit(ctx, &consensus.VoteBody{Proposal: pid, Yes: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.Submit(ctx, &consensus.VoteBody{Proposal: pid, Yes: false}); err == nil || !strings.Contains(err.Error(), "already voted") {
		t.Fatalf("double vote: %v", err)
	}
	// The leader tallies once the deadline passes; the passed proposal becomes cohort 1.
	waitFor(t, 10*time.Second, "tally", func() bool {
		r, err := bob.Query(ctx, protocol.Query{What: protocol.QueryProposal, ID: pid})
		return err == nil && len(r.Proposals) == 1 && r.Proposals[0].Status == consensus.ProposalPassed
	})
	r, err := alice.Query(ctx, protocol.Query{What: protocol.QueryCohort, ID: 1, Linearizable: true})
	if err != nil || r.Cohort == nil || r.Cohort.Proposal != pid {
		t.Fatalf("cohort 1: %+v, %v", r.Cohort, err)
	}
	// Every node converges to the same state hash.
	waitFor(t, 5*time.Second, "equal state hashes", func() bool {
		h := c.servers[0].Status().StateHash
		for _, s := range c.servers[1:] {
			if s.Status().StateHash != h {
				return false
			}
		}
		return true
	})
}

func TestForgedAndReplayedRequestsAreRejected(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	alice, mallory := newClient(t, c, "alice"), newClient(t, c, "mallory")
	if err := alice.EnsureRegistered(ctx, "alice", []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	if err := mallory.EnsureRegistered(ctx, "mallory", []string{"mallory"}); err != nil {
		t.Fatal(err)
	}
	operate(t, c.addrs, 0, alice)
	env, err := alice.Sign(&consensus.ProposeBody{Name: "p", Model: "mlp", Dataset: "d",
		Params: consensus.Hyperparams{Rounds: 1, InnerSteps: 1}, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 60_000})
	if err != nil {
		t.Fatal(err)
	}
	// Forged: a body changed after signing.
	forged := env
	forged.Body = append([]byte(nil), env.Body...)
	forged.Body[len(forged.Body)-1] ^= 1
	if _, err := alice.SubmitEnvelope(ctx, forged); !errors.Is(err, consensus.ErrBadSignature) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("forged envelope: %v", err)
	}
	// Unsigned.
	unsigned := env
	unsigned.Sig = nil
	if _, err := alice.SubmitEnvelope(ctx, unsigned); !errors.Is(err, consensus.ErrUnsigned) || client.Retryable(err) {
		t.Fatalf("unsigned envelope: %v", err)
	}
	// Replayed by another member: refused at the door.
	if _, err := mallory.SubmitEnvelope(ctx, env); err == nil || !strings.Contains(err.Error(), "sent by") {
		t.Fatalf("replay by another member: %v", err)
	}
	// Applied once, then a retry of the same envelope returns the cached result.
	r1, err := alice.SubmitEnvelope(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := alice.SubmitEnvelope(ctx, env)
	if err != nil || !r2.Duplicate || r2.ID != r1.ID {
		t.Fatalf("retry: %+v, %v (first %+v)", r2, err, r1)
	}
	q, err := alice.Query(ctx, protocol.Query{What: protocol.QueryProposals, Linearizable: true})
	if err != nil || len(q.Proposals) != 1 {
		t.Fatalf("proposals after retry: %d, %v", len(q.Proposals), err)
	}
}

func TestJoinClusterRefusesAnImpostor(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	// Mallory claims to be node c2 at c2's address, but connects from elsewhere with her own key.
	mallory := newClient(t, c, "mallory")
	id := testIdentity(t, "mallory")
	env, err := consensus.NewEnvelope(id.Key, 1, &consensus.AddCoordinatorBody{PublicKey: id.PublicKey(), Name: "c2"})
	if err != nil {
		t.Fatal(err)
	}
	req := transport.Message{Header: transport.Header{Type: MsgJoinCluster}}
	if err := req.SetBody(joinRequest{ID: "c2", Addr: c.addrs[1], Env: env}); err != nil {
		t.Fatal(err)
	}
	var leader string
	for i, s := range c.servers {
		if s.Node().IsLeader() {
			leader = c.addrs[i]
		}
	}
	_, err = mallory.CallAt(ctx, leader, req)
	if err == nil || !strings.Contains(err.Error(), "connects from") {
		t.Fatalf("impostor's join-cluster: %v, want a refusal naming the address mismatch", err)
	}
	if n := len(c.servers[0].Status().Coordinators); n != 3 {
		t.Fatalf("%d coordinators registered, want 3", n)
	}
}

func TestNodeJoinsRunningCluster(t *testing.T) {
	c := startCluster(t, 3)
	// Ask a follower: it points the new node at the leader.
	via := c.addrs[0]
	for i, s := range c.servers {
		if !s.Node().IsLeader() {
			via = c.addrs[i]
		}
	}
	viaKey := ""
	for i, a := range c.addrs {
		if a == via {
			viaKey = c.servers[i].KeyID()
		}
	}
	c4 := testIdentity(t, "c4")
	// Unapproved, the node cannot get in: the leader refuses its key.
	sk := bound(t)
	s, err := New(Config{ID: "c4", Dir: t.TempDir(), Listen: sk.Addr(), PacketConn: sk.UDP, RaftListener: sk.TCP,
		Join: via, JoinKey: viaKey, Identity: c4, Raft: fastRaft(), Tick: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.registerSelf(context.Background()); err == nil || !strings.Contains(err.Error(), "not approved") {
		t.Fatalf("unapproved join: %v, want a refusal naming the missing approval", err)
	}
	s.Close()
	// A majority of the operators (two of three) approve its key.
	approve(t, c, []string{"c1", "c2"}, &consensus.ApproveCoordinatorBody{ID: c4.NodeID().String(), Name: "c4"})
	// The refused node's sockets closed with it; it comes back on fresh ones.
	sk = bound(t)
	s, err = New(Config{ID: "c4", Dir: t.TempDir(), Listen: sk.Addr(), PacketConn: sk.UDP, RaftListener: sk.TCP,
		Join: via, JoinKey: viaKey, Identity: c4, Raft: fastRaft(), Tick: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	waitFor(t, 15*time.Second, "c4 voter, registered and caught up", func() bool {
		st := s.Status()
		return len(st.Servers) == 4 && len(st.Coordinators) == 4 && st.StateHash == c.servers[0].Status().StateHash
	})
}

// approve submits body signed by each named coordinator's node key, as its operator would
// (cohort approve-coordinator); the last signature must apply it.
func approve(t *testing.T, c *cluster, by []string, body consensus.Body) consensus.Result {
	t.Helper()
	var res consensus.Result
	for i, name := range by {
		cl, err := client.Dial(client.Config{Addrs: c.addrs, Identity: testIdentity(t, name), Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		res, err = cl.Submit(context.Background(), body)
		cl.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := i < len(by)-1; (res.Status == "pending") != want {
			t.Fatalf("%s: status %q after %d of %d signatures", name, res.Status, i+1, len(by))
		}
	}
	return res
}

// operate has the operators submit commands with their coordinators' node keys (c1, c2, ... as
// startCluster and dashboardNode name them), as many as make a majority of the len(addrs)
// coordinators: fund the treasury with pool and grant each member one vote.
func operate(t *testing.T, addrs []string, pool uint64, members ...*client.Client) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(addrs)/2+1; i++ {
		op, err := client.Dial(client.Config{Addrs: addrs, Identity: testIdentity(t, fmt.Sprintf("c%d", i+1)), Timeout: 15 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if pool > 0 {
			if _, err := op.Submit(ctx, &consensus.FundBody{Amount: pool}); err != nil {
				t.Fatalf("fund: %v", err)
			}
		}
		for _, m := range members {
			if _, err := op.Submit(ctx, &consensus.GrantBody{Member: m.ID(), Votes: 1}); err != nil {
				t.Fatalf("grant %s: %v", m.ID(), err)
			}
		}
		op.Close()
	}
}

// passCohort submits body as proposer's proposal, has every voter vote yes and waits until it
// passed as cohort 1.
func passCohort(t *testing.T, ctx context.Context, body *consensus.ProposeBody, proposer *client.Client, voters ...*client.Client) {
	t.Helper()
	res, err := proposer.Submit(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range voters {
		if _, err := cl.Submit(ctx, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "cohort", func() bool {
		r, err := proposer.Query(ctx, protocol.Query{What: protocol.QueryProposal, ID: res.ID})
		return err == nil && r.Proposals[0].Cohort == 1
	})
}
