package coordinator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/coordinator/round"
	"github.com/cohortlab/cohort/internal/wirecode"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/transport"
)

// TestBadUploadsAreRefusedAndTheRoundGoesOn: garbage, a wrong-size slice, a wrong range and a
// non-participant are each refused with an error naming the problem; the uploads that follow are
// aggregated as if nothing happened, each weighted by what the protocol fixes, whatever samples it
// claims. Then the cohort's model and aggregates go to its members, and not to a registered
// non-member or a fresh key.
func TestBadUploadsAreRefusedAndTheRoundGoesOn(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	alice, bob, eve := newClient(t, c, "alice"), newClient(t, c, "bob"), newClient(t, c, "eve")
	mallory := newClient(t, c, "mallory") // never registers
	for _, m := range []struct {
		cl   *client.Client
		name string
	}{{alice, "alice"}, {bob, "bob"}, {eve, "eve"}} {
		if err := m.cl.EnsureRegistered(ctx, m.name, []string{m.name}); err != nil {
			t.Fatal(err)
		}
	}
	operate(t, c.addrs, 100, alice, bob)
	passCohort(t, ctx, &consensus.ProposeBody{Name: "tiny", Model: "mlp:784-16-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 1, Rounds: 2, Codec: "q8"}, RewardPool: 100, MinMembers: 2,
		QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 400}, alice, alice, bob)
	// A long-poll for the first round, waiting before anyone joined, is woken by the round.
	polled := make(chan error, 1)
	go func() {
		for {
			q, err := eve.Query(ctx, protocol.Query{What: protocol.QueryNextRound, ID: 1, After: 0})
			if err != nil {
				polled <- err
				return
			}
			if len(q.Rounds) == 1 && q.Rounds[0].Number == 1 {
				if late := time.Since(time.UnixMilli(q.Rounds[0].OpenedAt)); late > time.Second {
					polled <- fmt.Errorf("next-round answered %v after round 1 opened", late)
				}
				polled <- nil
				return
			}
		}
	}()
	for _, cl := range []*client.Client{alice, bob} {
		name := map[*client.Client]string{alice: "alice", bob: "bob"}[cl]
		fp := sha256.Sum256([]byte(name))
		if _, err := cl.Submit(ctx, &consensus.JoinBody{Cohort: 1, Contributors: []consensus.ContributorData{{Name: name, Fingerprint: fp[:], Samples: 10}}}); err != nil {
			t.Fatal(err)
		}
	}
	var round consensus.Round
	waitFor(t, 10*time.Second, "round 1 open", func() bool {
		r, err := alice.Query(ctx, protocol.Query{What: protocol.QueryRounds, ID: 1})
		if err != nil || len(r.Rounds) == 0 {
			return false
		}
		round = r.Rounds[0]
		return true
	})
	select {
	case err := <-polled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the next-round long-poll did not return round 1")
	}
	if len(round.Slices) != 1 {
		t.Fatalf("%d slices for a model smaller than one chunk", len(round.Slices))
	}
	sl := round.Slices[0]
	n := int(sl.End - sl.Start)
	var aggAddr string
	var agg *Server
	for i, s := range c.servers {
		if s.KeyID() == sl.Aggregator {
			aggAddr, agg = c.addrs[i], s
		}
	}
	waitFor(t, 5*time.Second, "the aggregator applies the round", func() bool {
		return agg.Node().View(func(st *consensus.State) error { _, err := st.Round(1, 1); return err }) == nil
	})
	// Peers code slices with the model's shape (its hash travels in every message).
	c.servers[0].rtMu.Lock()
	rt := c.servers[0].rts[1]
	c.servers[0].rtMu.Unlock()
	codec, err := compress.New(compress.Config{Setting: compress.MustParse("q8"), Shape: rt.shape.Slice(int(sl.Start), int(sl.End))})
	if err != nil {
		t.Fatal(err)
	}
	good := codec
	upload := func(cl *client.Client, start, end uint64, payload []byte, samples uint64) error {
		req := transport.Message{Header: transport.Header{Type: protocol.MsgUpload}, Payload: payload}
		if err := req.SetBody(protocol.Upload{Cohort: 1, Round: 1, Slice: 0, Start: start, End: end, Samples: samples}); err != nil {
			t.Fatal(err)
		}
		_, err := cl.CallAt(ctx, aggAddr, req)
		return err
	}
	vec := func(n int, v float32) []byte {
		x := make([]float32, n)
		for i := range x {
			x[i] = v
		}
		msg, err := codec.Encode(nil, x)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	for _, tc := range []struct {
		name    string
		cl      *client.Client
		start   uint64
		payload []byte
		want    string
	}{
		{"garbage", alice, sl.Start, []byte("definitely not a compressed tensor"), "upload: compress"},
		{"wrong size", alice, sl.Start, vec(n-1, 0.1), "values for a slice of"},
		{"wrong range", alice, sl.Start + 1, vec(n, 0.1), "not ["},
		{"not a participant", eve, sl.Start, vec(n, 0.1), "not a participant"},
		{"not a member", mallory, sl.Start, vec(n, 0.1), "is not a registered member"},
		// Refused from the header, before a byte of the payload is read.
		{"above the codec's largest encoding", alice, sl.Start, make([]byte, codec.MaxEncodedLen(n)+uploadSlack+1),
			fmt.Sprintf("round.upload payload of %d bytes, limit %d", codec.MaxEncodedLen(n)+uploadSlack+1, codec.MaxEncodedLen(n)+uploadSlack)},
	} {
		err := upload(tc.cl, tc.start, sl.End, tc.payload, 10)
		t.Logf("%s: %v", tc.name, err)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	// An upload for a round ahead of the aggregator's state that does not arrive within roundWait
	// (round 2 opens only after round 1) is "resend", not "no such round": a node behind the
	// leader must not make a peer give its slice up. A cohort the node does not know is refused.
	for _, tc := range []struct {
		cohort uint64
		round  uint32
		want   error
	}{{1, 2, protocol.ErrUnavailable}, {9, 1, consensus.ErrNotFound}} {
		req := transport.Message{Header: transport.Header{Type: protocol.MsgUpload}, Payload: vec(n, 0.1)}
		if err := req.SetBody(protocol.Upload{Cohort: tc.cohort, Round: tc.round, Slice: 0, Start: sl.Start, End: sl.End, Samples: 10}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.CallAt(ctx, aggAddr, req); !errors.Is(err, tc.want) {
			t.Errorf("upload for cohort %d round %d: %v, want %v", tc.cohort, tc.round, err, tc.want)
		}
	}
	// Uploads encoded with the model's codec shape are aggregated. Alice claims 2^40 samples, bob
	// 10: both registered 10 samples, so both weigh 10 (H × batch is 64) and the mean is 1.5.
	// Weighted by the claims it would be alice's 1.0.
	for i, cl := range []*client.Client{alice, bob} {
		x := make([]float32, n)
		for j := range x {
			x[j] = float32(i + 1) // alice sends 1s, bob 2s
		}
		msg, _ := good.Encode(nil, x)
		if err := upload(cl, sl.Start, sl.End, msg, []uint64{1 << 40, 10}[i]); err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
	}
	req := transport.Message{Header: transport.Header{Type: protocol.MsgAggregate}}
	req.SetBody(protocol.AggregateRequest{Cohort: 1, Round: 1, Slice: 0})
	reply, err := alice.CallAt(ctx, aggAddr, req)
	if err != nil {
		t.Fatal(err)
	}
	var ar protocol.AggregateReply
	if err := reply.DecodeBody(&ar); err != nil || ar.Contributors != 2 || ar.Aborted {
		t.Fatalf("aggregate %+v, %v", ar, err)
	}
	mean := make([]float32, n)
	if err := spec.DecodeAggregate(rt.down, rt.shape, int(sl.Start), int(sl.End), reply.Payload, mean); err != nil {
		t.Fatal(err)
	}
	if len(reply.Payload) > n+n/4 {
		t.Fatalf("aggregate sent down in %d bytes for %d values: want q8", len(reply.Payload), n)
	}
	if mean[0] < 1.49 || mean[0] > 1.51 {
		t.Fatalf("aggregate[0] = %v, want 1.5: a claim of 2^40 samples must weigh no more than the registered 10", mean[0])
	}

	// The model, the momentum and the aggregates are the cohort's: a registered member that did
	// not join (eve) and a key never registered are refused, a member is served.
	stranger := newClient(t, c, "stranger")
	for _, cl := range []*client.Client{eve, stranger} {
		if _, err := cl.CallAt(ctx, aggAddr, req); !errors.Is(err, protocol.ErrForbidden) {
			t.Errorf("aggregate for a non-member: %v, want forbidden", err)
		}
	}
	mreq := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
	mreq.SetBody(protocol.ModelRequest{Cohort: 1})
	for _, cl := range []*client.Client{eve, stranger} {
		if _, err := cl.CallAt(ctx, aggAddr, mreq); !errors.Is(err, protocol.ErrForbidden) {
			t.Errorf("model for a non-member: %v, want forbidden", err)
		}
	}
	reply, err = alice.CallAt(ctx, aggAddr, mreq)
	if err != nil {
		t.Fatalf("model for a member: %v", err)
	}
	var mr protocol.ModelReply
	if err := reply.DecodeBody(&mr); err != nil || len(mr.Root) != len(transport.Hash{}) {
		t.Fatalf("model reply %+v, %v", mr, err)
	}
	// The blob itself: a stranger who learnt its root is refused it too.
	if _, err := stranger.FetchBlob(ctx, aggAddr, transport.Hash(mr.Root), int64(8*mr.Params), 1); !errors.Is(err, protocol.ErrForbidden) {
		t.Errorf("model blob for a stranger: %v, want forbidden", err)
	}
	blob, err := alice.FetchBlob(ctx, aggAddr, transport.Hash(mr.Root), int64(8*mr.Params), 1)
	if err != nil {
		t.Fatalf("model blob for a member: %v", err)
	}
	both, err := protocol.DecodeFloats(nil, blob, 2*mr.Params)
	if err != nil || protocol.HashParams(both[:mr.Params]) != [32]byte(mr.Hash) {
		t.Fatalf("model blob: %v, or its hash differs from the reply's", err)
	}
}

// TestForgetAggs: an aggregator forgets the updates of a round two rounds back once the leader
// has its sums (or it had none), and of any round keepStates back; a round the leader could not
// score yet keeps its updates, so that one slow round does not cost the rounds behind it theirs.
func TestForgetAggs(t *testing.T) {
	rt := &cohortRT{aggs: map[[2]int]*sliceAgg{}}
	scored := map[int]bool{1: true, 3: true, 6: true}
	for r := 1; r <= 9; r++ {
		a := &sliceAgg{timer: time.NewTimer(time.Hour), aborted: r == 4}
		if scored[r] {
			a.partial = &attribution.Partial{}
		}
		rt.aggs[[2]int{r, 0}] = a
	}
	rt.forgetAggs(9)
	var kept []int
	for r := 1; r <= 9; r++ {
		if rt.aggs[[2]int{r, 0}] != nil {
			kept = append(kept, r)
		}
	}
	// 1 and 2 are more than keepStates back; 3 and 6 (scored) and 4 (no updates) are done
	// with; 5 is unscored; 7–9 are recent.
	if want := []int{5, 7, 8, 9}; !slices.Equal(kept, want) {
		t.Fatalf("kept rounds %v, want %v", kept, want)
	}
}

// TestUnscorable: the leader records a round unscored at once for final answers, from this node or
// another, and retries the rest (transport failures, a slice still aggregating).
func TestUnscorable(t *testing.T) {
	final := fmt.Errorf("score: slice 0 of round 3 has no updates: %w", errUnscorable)
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{final, true},
		{&transport.RemoteError{Type: MsgScore, Code: wirecode.Of(final), Msg: final.Error()}, true},
		{&transport.RemoteError{Type: MsgScore, Msg: final.Error()}, false}, // the text alone classifies nothing
		{&transport.RemoteError{Type: MsgScore, Code: wirecode.Of(protocol.ErrUnavailable), Msg: "unavailable: slice 0 of round 3 still aggregating"}, false},
		{fmt.Errorf("%w: score: this node has not reached round 3's model yet", protocol.ErrUnavailable), false},
		{errValidatorLoading, false},
		{errors.New("dial: connection refused"), false},
	} {
		if got := unscorable(tc.err); got != tc.want {
			t.Errorf("unscorable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestConfigValidatesRounds: a coordinator refuses round settings the round engine would misread.
func TestConfigValidatesRounds(t *testing.T) {
	id := testIdentity(t, "c1")
	base := Config{ID: "c1", InMemory: true, Listen: "127.0.0.1:7000", Identity: id,
		Peers: []consensus.Peer{{ID: "c1", Addr: "127.0.0.1:7000", Key: id.NodeID().String()}}}
	if err := base.Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	for _, r := range []RoundConfig{{Timeout: -time.Second}, {ClipMultiple: 0.5}, {ClipMultiple: 8}, {DropMultiple: math.NaN()}} {
		cfg := base
		cfg.Rounds = r
		if err := cfg.Validate(); !errors.Is(err, round.ErrConfig) {
			t.Errorf("rounds %+v: Validate() = %v, want round.ErrConfig", r, err)
		}
	}
}
