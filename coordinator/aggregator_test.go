package coordinator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// joiner is a coordinator started with --join (a voter added later, or an aggregator).
type joiner struct {
	s    *Server
	stop func() // stops and closes it; safe to call twice
}

// startJoiner starts node name joining the cluster through the coordinator at via (key viaKey).
func startJoiner(t *testing.T, name, via, viaKey string, aggregator bool, tune func(*Config)) *joiner {
	t.Helper()
	sk := bound(t)
	cfg := Config{ID: name, Dir: t.TempDir(), Listen: sk.Addr(), PacketConn: sk.UDP, RaftListener: sk.TCP,
		Join: via, JoinKey: viaKey, Aggregator: aggregator, Identity: testIdentity(t, name), Raft: fastRaft(), Tick: 50 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	var once sync.Once
	j := &joiner{s: s, stop: func() { once.Do(func() { cancel(); <-done; s.Close() }) }}
	t.Cleanup(j.stop)
	return j
}

func TestConfigAggregatorJoins(t *testing.T) {
	id := testIdentity(t, "a1")
	cfg := Config{ID: "a1", InMemory: true, Listen: "127.0.0.1:7001", Identity: id, Aggregator: true,
		Peers: []consensus.Peer{{ID: "a1", Addr: "127.0.0.1:7001", Key: id.NodeID().String()}}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "aggregator joins a running cluster") {
		t.Fatalf("aggregator with --peers: %v", err)
	}
	cfg.Peers, cfg.Join, cfg.JoinKey = nil, "127.0.0.1:7002", testIdentity(t, "c1").NodeID().String()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("aggregator with --join: %v", err)
	}
}

// TestAggregatorsBeyondTheVoters: three voters and two aggregators (raft non-voters, keys the
// operators approved). An unapproved key cannot join as an aggregator, while members are served.
// The aggregators follow the log but never vote; a round's five slices land on all five nodes,
// the uploads to the aggregators are aggregated, and every replica, aggregators included, holds
// the same model hash. Killing an aggregator moves its slice to a live coordinator and the round
// completes there.
func TestAggregatorsBeyondTheVoters(t *testing.T) {
	rounds := func(cfg *Config) { cfg.Rounds.Timeout = 12 * time.Second }
	c := startClusterWith(t, 3, rounds)
	ctx := context.Background()
	alice, bob := newClient(t, c, "alice"), newClient(t, c, "bob")
	for _, m := range []struct {
		cl   *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		if err := m.cl.EnsureRegistered(ctx, m.name, []string{m.name}); err != nil {
			t.Fatal(err)
		}
	}
	via, viaKey := c.addrs[0], c.servers[0].KeyID()

	// An outsider's key asking to join as an aggregator is refused, and the members are served.
	intruder := startJoiner(t, "a9", via, viaKey, true, rounds)
	if err := intruder.s.registerSelf(ctx); err == nil || !strings.Contains(err.Error(), "not approved") {
		t.Fatalf("unapproved aggregator: %v, want a refusal naming the missing approval", err)
	}
	if _, err := alice.Query(ctx, protocol.Query{What: protocol.QueryMembers, Linearizable: true}); err != nil {
		t.Fatalf("a member while an intruder knocks: %v", err)
	}
	intruder.stop()

	// Both aggregators are approved before either joins: once one is in, a majority is 3 of 4.
	for _, name := range []string{"a1", "a2"} {
		approve(t, c, []string{"c1", "c2"}, &consensus.ApproveCoordinatorBody{ID: testIdentity(t, name).NodeID().String(), Name: name})
	}
	aggs := []*joiner{startJoiner(t, "a1", via, viaKey, true, rounds), startJoiner(t, "a2", via, viaKey, true, rounds)}
	all := append(append([]*Server{}, c.servers...), aggs[0].s, aggs[1].s)
	addrs := append(append([]string{}, c.addrs...), aggs[0].s.Addr(), aggs[1].s.Addr())
	waitFor(t, 20*time.Second, "two aggregators registered and in every configuration", func() bool {
		for _, s := range all {
			st := s.Status()
			aggregators := 0
			for _, sv := range st.Servers {
				if !sv.Voter() {
					aggregators++
				}
			}
			if len(st.Servers) != 5 || aggregators != 2 || len(st.Coordinators) != 5 {
				return false
			}
		}
		return true
	})
	for _, j := range aggs {
		if j.s.Node().Voter() || j.s.Node().IsLeader() || !j.s.Status().Aggregator {
			t.Fatalf("%s: voter %v, leader %v", j.s.cfg.ID, j.s.Node().Voter(), j.s.Node().IsLeader())
		}
		// Asking again as a voter does not give it a vote.
		if err := j.s.register(ctx, false); !errors.Is(err, ErrSuffrage) {
			t.Fatalf("%s asking to be a voter: %v, want ErrSuffrage", j.s.cfg.ID, err)
		}
	}
	// A member finds every coordinator by key from any node's status, aggregators included.
	st, err := alice.Query(ctx, protocol.Query{What: protocol.QueryStatus})
	if err != nil {
		t.Fatal(err)
	}
	keyAddrs := st.Status.KeyAddrs()
	for i, s := range all {
		if keyAddrs[s.KeyID()] != addrs[i] {
			t.Fatalf("KeyAddrs[%s] = %q, want %q", s.cfg.ID, keyAddrs[s.KeyID()], addrs[i])
		}
	}

	operate(t, addrs, 100, alice, bob) // a majority of five: c1, c2, c3
	passCohort(t, ctx, &consensus.ProposeBody{Name: "five-slices", Model: "mlp:784-128-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 1, Rounds: 3, Codec: "q8"}, RewardPool: 100, MinMembers: 2,
		QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 400}, alice, alice, bob)
	for _, cl := range []*client.Client{alice, bob} {
		name := map[*client.Client]string{alice: "alice", bob: "bob"}[cl]
		fp := sha256.Sum256([]byte(name))
		if _, err := cl.Submit(ctx, &consensus.JoinBody{Cohort: 1, Contributors: []consensus.ContributorData{{Name: name, Fingerprint: fp[:], Samples: 10}}}); err != nil {
			t.Fatal(err)
		}
	}
	openRound := func(n uint32) consensus.Round {
		t.Helper()
		var r consensus.Round
		waitFor(t, 20*time.Second, fmt.Sprintf("round %d open", n), func() bool {
			q, err := alice.Query(ctx, protocol.Query{What: protocol.QueryRounds, ID: 1})
			if err != nil || len(q.Rounds) < int(n) {
				return false
			}
			r = q.Rounds[n-1]
			return true
		})
		return r
	}
	rt := func(s *Server) *cohortRT {
		s.rtMu.Lock()
		defer s.rtMu.Unlock()
		return s.rts[1]
	}
	// send sends member cl's update of value v for slice i of round r to the slice's aggregator,
	// found by key as a peer finds it, as a message of type typ (MsgUpload, MsgExchange).
	send := func(typ string, cl *client.Client, r consensus.Round, i int, v float32) (transport.Message, error) {
		sl := r.Slices[i]
		x := rt(c.servers[0])
		codec, err := compress.New(compress.Config{Setting: compress.MustParse("q8"), Shape: x.shape.Slice(int(sl.Start), int(sl.End))})
		if err != nil {
			t.Fatal(err)
		}
		vals := make([]float32, sl.End-sl.Start)
		for j := range vals {
			vals[j] = v * float32(1+j%7) / 1000
		}
		msg, err := codec.Encode(nil, vals)
		if err != nil {
			t.Fatal(err)
		}
		req := transport.Message{Header: transport.Header{Type: typ}, Payload: msg}
		if err := req.SetBody(protocol.Upload{Cohort: 1, Round: r.Number, Slice: i, Start: sl.Start, End: sl.End, Samples: 10}); err != nil {
			t.Fatal(err)
		}
		// As a peer does: the aggregator a round names may not have applied that assignment yet.
		for try := 0; ; try++ {
			reply, err := cl.CallAt(ctx, keyAddrs[sl.Aggregator], req)
			if !errors.Is(err, protocol.ErrNotAggregator) || try == 50 {
				return reply, err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	upload := func(cl *client.Client, r consensus.Round, i int, v float32) error {
		_, err := send(protocol.MsgUpload, cl, r, i, v)
		return err
	}
	// applied waits until every server in ss applied round n with one hash and returns it.
	applied := func(ss []*Server, n uint32) [32]byte {
		t.Helper()
		var h [32]byte
		waitFor(t, 30*time.Second, fmt.Sprintf("round %d applied with one hash on %d replicas", n, len(ss)), func() bool {
			for i, s := range ss {
				x := rt(s)
				if x == nil {
					return false
				}
				x.mu.Lock()
				a, hh := x.applied, x.hash
				x.mu.Unlock()
				if a < n || i > 0 && hh != h {
					return false
				}
				h = hh
			}
			return true
		})
		return h
	}
	receipts := func(n uint32, h [32]byte) {
		t.Helper()
		for _, cl := range []*client.Client{alice, bob} {
			if _, err := cl.Submit(ctx, &consensus.ReceiptBody{Cohort: 1, Round: n, SamplesUsed: 10, BytesSent: 1, ModelHashAfter: h[:]}); err != nil {
				t.Fatalf("receipt round %d: %v", n, err)
			}
		}
	}

	// Round 1: one slice per node, voters and aggregators alike.
	r1 := openRound(1)
	var on []string
	for _, sl := range r1.Slices {
		on = append(on, sl.Aggregator)
	}
	want := make([]string, 0, len(all))
	for _, s := range all {
		want = append(want, s.KeyID())
	}
	slices.Sort(on)
	slices.Sort(want)
	if !slices.Equal(on, want) {
		t.Fatalf("round 1 slices on %v, want one on each of the five nodes %v", on, want)
	}
	// Slice 0 goes as exchanges (MsgExchange): alice's is answered, after protocol.AggregateWait,
	// without the aggregate, which waits for bob's; bob's, which completes the slice, with it.
	// The other slices go as plain uploads, and bob's exchange of slice 1 after alice's upload.
	for i := range r1.Slices {
		for k, cl := range []*client.Client{alice, bob} {
			typ := protocol.MsgUpload
			if i == 0 || i == 1 && cl == bob {
				typ = protocol.MsgExchange
			}
			reply, err := send(typ, cl, r1, i, float32(k+1))
			if err != nil {
				t.Fatalf("round 1 slice %d %s: %v", i, typ, err)
			}
			if typ != protocol.MsgExchange {
				continue
			}
			if cl == alice {
				if len(reply.Body) != 0 || len(reply.Payload) != 0 {
					t.Fatalf("round 1 slice %d: alice's exchange answered with %d body and %d payload bytes before bob's upload", i, len(reply.Body), len(reply.Payload))
				}
				continue
			}
			var ar protocol.AggregateReply
			if err := reply.DecodeBody(&ar); err != nil || ar.Contributors != 2 || ar.Aborted || len(reply.Payload) == 0 {
				t.Fatalf("round 1 slice %d: bob's exchange answered %+v with %d payload bytes, %v", i, ar, len(reply.Payload), err)
			}
		}
	}
	// The aggregators averaged both members' updates of their slices.
	for _, j := range aggs {
		for i, sl := range r1.Slices {
			if sl.Aggregator != j.s.KeyID() {
				continue
			}
			req := transport.Message{Header: transport.Header{Type: protocol.MsgAggregate}}
			req.SetBody(protocol.AggregateRequest{Cohort: 1, Round: 1, Slice: i})
			reply, err := alice.CallAt(ctx, j.s.Addr(), req)
			if err != nil {
				t.Fatal(err)
			}
			var ar protocol.AggregateReply
			if err := reply.DecodeBody(&ar); err != nil || ar.Contributors != 2 || ar.Aborted {
				t.Fatalf("%s slice %d aggregate %+v, %v", j.s.cfg.ID, i, ar, err)
			}
		}
	}
	h1 := applied(all, 1)
	receipts(1, h1)

	// Round 2: an aggregator dies; its slice moves to a live coordinator and the round completes.
	r2 := openRound(2)
	victim := aggs[0]
	vi := slices.IndexFunc(r2.Slices, func(sl consensus.SliceAssignment) bool { return sl.Aggregator == victim.s.KeyID() })
	if vi < 0 {
		t.Fatalf("round 2 gives %s no slice", victim.s.cfg.ID)
	}
	victim.stop()
	for i := range r2.Slices {
		if i == vi {
			continue
		}
		for k, cl := range []*client.Client{alice, bob} {
			if err := upload(cl, r2, i, float32(k+2)); err != nil {
				t.Fatalf("round 2 slice %d upload: %v", i, err)
			}
		}
	}
	var moved consensus.Round
	waitFor(t, 20*time.Second, "the dead aggregator's slice moved", func() bool {
		q, err := alice.Query(ctx, protocol.Query{What: protocol.QueryRounds, ID: 1})
		if err != nil || len(q.Rounds) < 2 {
			return false
		}
		moved = q.Rounds[1]
		return moved.Slices[vi].Aggregator != victim.s.KeyID()
	})
	if moved.Slices[vi].Aggregator == "" || !slices.Contains(want, moved.Slices[vi].Aggregator) {
		t.Fatalf("slice %d moved to %q", vi, moved.Slices[vi].Aggregator)
	}
	for k, cl := range []*client.Client{alice, bob} {
		if err := upload(cl, moved, vi, float32(k+2)); err != nil {
			t.Fatalf("round 2 moved slice upload: %v", err)
		}
	}
	live := slices.DeleteFunc(slices.Clone(all), func(s *Server) bool { return s == victim.s })
	h2 := applied(live, 2)
	if h2 == h1 {
		t.Fatal("round 2 left the model unchanged")
	}
	t.Logf("round 2: slice %d moved from %s to %s; %d replicas agree on %x", vi, victim.s.cfg.ID, moved.Slices[vi].Aggregator, len(live), h2[:8])
}
