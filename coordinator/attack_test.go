package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// The attacker runs in a child process (the test binary, running TestAttackerProcess), so the
// heap and goroutines measured are the coordinators' alone; and the cluster it attacks runs in
// a fresh process of its own too (attackFreshEnv), so that what earlier tests of the package
// left on the heap (caches, a previous cluster's garbage still being collected) is not measured.
const (
	attackTargetEnv = "COHORT_ATTACK_TARGET"
	attackForEnv    = "COHORT_ATTACK_FOR"
	attackFreshEnv  = "COHORT_ATTACK_FRESH"
)

// headerOnly returns the bytes WriteMessage sends for h before a payload of n bytes: a frame
// that announces the payload, for an attacker that then sends only some of it.
func headerOnly(t testing.TB, h transport.Header, n int) []byte {
	var w firstWrite
	transport.WriteMessage(&w, h, make([]byte, n))
	if w.b == nil {
		t.Fatal("no header written")
	}
	return w.b
}

// firstWrite keeps its first Write and fails the rest.
type firstWrite struct{ b []byte }

func (w *firstWrite) Write(p []byte) (int, error) {
	if w.b != nil {
		return 0, errors.New("only the header")
	}
	w.b = append([]byte(nil), p...)
	return len(p), nil
}

// TestAttackerProcess is the attacker of TestStrangerCannotExhaustACoordinator: a fresh,
// never registered key that opens as many connections as it can to the target and keeps every
// stream it may open busy with frames it never finishes: one byte; a 64 MiB submit or upload
// announced and 64 KiB of it sent; a 64 KiB header announced and 1 KiB of it sent. It prints
// how many connections were admitted and how many streams it opened.
func TestAttackerProcess(t *testing.T) {
	target := os.Getenv(attackTargetEnv)
	if target == "" {
		t.Skip("the attacker of TestStrangerCannotExhaustACoordinator; run by it")
	}
	d, err := time.ParseDuration(os.Getenv(attackForEnv))
	if err != nil {
		t.Fatal(err)
	}
	id, err := transport.GenerateIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := transport.ListenAddr("127.0.0.1:0", transport.Config{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()

	upload := transport.Header{Type: protocol.MsgUpload}
	if err := upload.SetBody(protocol.Upload{Cohort: 99, Round: 1, Slice: 0, Start: 0, End: 1 << 24, Samples: 1}); err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 64<<10)
	bigHeader := append([]byte{'C', 'H', 1}, 0, 1, 0, 0) // announces a 64 KiB header
	frames := [][]byte{
		{'C'},
		append(headerOnly(t, transport.Header{Type: protocol.MsgSubmit}, 64<<20), junk...),
		append(headerOnly(t, upload, 64<<20), junk...),
		append(bigHeader, junk[:1<<10]...),
	}
	var conns []*transport.Conn
	for range transport.DefaultMaxConnsPerKey + 4 {
		c, err := ep.Dial(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond) // the refused ones are closed by now
	admitted := 0
	refusal := ""
	for _, c := range conns {
		if c.Context().Err() == nil {
			admitted++
		} else {
			refusal = context.Cause(c.Context()).Error()
		}
	}
	var opened atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		if c.Context().Err() != nil {
			continue
		}
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				st, err := c.OpenStream(ctx)
				if err != nil {
					return
				}
				opened.Add(1)
				st.SetDeadline(time.Now().Add(time.Second))
				st.Write(frames[i%len(frames)]) // and never finish, never read
			}
		})
	}
	wg.Wait()
	fmt.Printf("ATTACK admitted=%d opened=%d refusal=%q\n", admitted, opened.Load(), refusal)
}

type memSample struct {
	heap       uint64 // live heap: bytes the last collection found reachable
	goroutines int
}

// sampleMem collects garbage and reads the live heap it marked. Not MemStats.HeapAlloc: that
// also counts whatever was allocated between the end of the collection and the reading, and
// under load (the sampler descheduled for tens of milliseconds while the attack's packets are
// parsed at hundreds of MB/s) that garbage came to tens of MiB and made the bound flaky.
func sampleMem() memSample {
	runtime.GC()
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	return memSample{heap: s[0].Value.Uint64(), goroutines: runtime.NumGoroutine()}
}

// TestStrangerCannotExhaustACoordinator: a key nobody registered attacks a coordinator of a
// running 3-node cluster over real QUIC, from another process, with every connection and stream
// the coordinator lets it open, each stalled or announcing 64 MiB (TestAttackerProcess). The
// coordinators' live heap grows by less than 64 MiB and their goroutines by less than 704 while
// it lasts (16 connections × 32 streams at most are being served, each read as it arrives, and
// a few goroutines per connection); the
// connections over the per-key limit are closed naming it; requests of an unknown type or with
// a payload their type does not take are refused at once with their payload unread; and an
// honest member registers, proposes, votes and queries through the attacked coordinator all the
// while.
func TestStrangerCannotExhaustACoordinator(t *testing.T) {
	if os.Getenv(attackFreshEnv) == "" {
		runFresh(t)
		return
	}
	c := startCluster(t, 3)
	ctx := context.Background()
	target := c.addrs[0] // the first address the honest client tries
	honest := newClient(t, c, "honest")
	if _, err := honest.Query(ctx, protocol.Query{What: protocol.QueryPing}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 32<<20) // the payload of the stranger's refused requests below
	base := sampleMem()

	const attackFor = 14 * time.Second // past the 10 s a stalled request is given
	cmd := exec.Command(os.Args[0], "-test.run=^TestAttackerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), attackTargetEnv+"="+target, attackForEnv+"="+attackFor.String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	attackDone := make(chan error, 1)
	go func() { attackDone <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() }) // if the test stops early; a no-op once it exited

	var peak memSample
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			s := sampleMem()
			peak.heap, peak.goroutines = max(peak.heap, s.heap), max(peak.goroutines, s.goroutines)
			select {
			case <-stopSampling:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	// Meanwhile, an honest member goes about its business through the attacked coordinator.
	time.Sleep(2 * time.Second) // the attack is under way
	if err := honest.EnsureRegistered(ctx, "honest", []string{"honest"}); err != nil {
		t.Fatalf("register during the attack: %v", err)
	}
	operate(t, c.addrs, 1000, honest) // the operators fund the pool and grant the member a vote
	res, err := honest.Submit(ctx, &consensus.ProposeBody{Name: "under-attack", Model: "mlp:784-256-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 50, Rounds: 10, Codec: "topk:0.01+q4", OuterLR: "1", OuterMomentum: "0.8", ErrorDecay: "0.9"}, RewardPool: 1000,
		MinMembers: 1, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 60_000})
	if err != nil {
		t.Fatalf("propose during the attack: %v", err)
	}
	if _, err := honest.Submit(ctx, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
		t.Fatalf("vote during the attack: %v", err)
	}
	// The target may be a follower a moment behind the leader that applied the vote.
	waitFor(t, 5*time.Second, "the proposal and its vote on the attacked node", func() bool {
		q, err := honest.QueryAt(ctx, target, protocol.Query{What: protocol.QueryProposal, ID: res.ID})
		return err == nil && len(q.Proposals) == 1 && len(q.Proposals[0].Votes) == 1
	})

	// Another stranger's requests the coordinator cannot take are answered at once, from their
	// header: the payload is not read (the sender gets to send little more than the windows).
	stranger, err := transport.Dial(ctx, target, transport.Config{Identity: testIdentity(t, "stranger")})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	for _, tc := range []struct {
		typ  string
		want string
	}{
		{"no.such.type", `no handler for message type "no.such.type"`},
		{protocol.MsgSubmit, "submit payload of 33554432 bytes, limit 0"},
		{protocol.MsgQuery, "query payload of 33554432 bytes, limit 0"},
		{transport.TypePut, `no handler for message type "xfer.put"`}, // coordinators take no pushes
	} {
		sent := stranger.Stats().BytesSent
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := transport.Call(cctx, stranger, transport.Message{Header: transport.Header{Type: tc.typ}, Payload: big})
		cancel()
		var re *transport.RemoteError
		if !errors.As(err, &re) || !strings.Contains(re.Msg, tc.want) {
			t.Fatalf("%s with a 32 MiB payload: err = %v, want a refusal containing %q", tc.typ, err, tc.want)
		}
		if n := stranger.Stats().BytesSent - sent; n > 8<<20 {
			t.Fatalf("%s: %d bytes sent of a request refused from its header", tc.typ, n)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s: refused after %v", tc.typ, d)
		}
	}

	if err := <-attackDone; err != nil {
		t.Fatalf("attacker: %v\n%s", err, out.String())
	}
	close(stopSampling)
	<-sampled
	runtime.KeepAlive(big)
	report := ""
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "ATTACK ") {
			report = line
		}
	}
	t.Logf("%s; heap %d → peak %d MiB, goroutines %d → peak %d", report, base.heap>>20, peak.heap>>20, base.goroutines, peak.goroutines)
	admitted, opened := attackField(t, report, "admitted"), attackField(t, report, "opened")
	if admitted != transport.DefaultMaxConnsPerKey {
		t.Fatalf("%d attacker connections admitted, want the per-key limit %d", admitted, transport.DefaultMaxConnsPerKey)
	}
	if !strings.Contains(report, "too many connections from key") {
		t.Fatalf("the connections over the limit were not closed naming it: %s", report)
	}
	// The attack was one: the attacker kept more streams coming than are ever served at once.
	if min := int64(3 * transport.DefaultMaxConnsPerKey * transport.DefaultMaxIncomingStreams / 2); opened < min {
		t.Fatalf("the attacker opened %d streams, fewer than %d: no attack to speak of", opened, min)
	}
	// The operator sees the attack in the target's metrics.
	srv := c.servers[0]
	for reason, least := range map[string]float64{"connection_limit": 4, "unknown_type": 2, "payload_limit": 2, "too_slow": 1, "refused_from_header": 1} {
		if n := refusedCount(t, srv, reason); n < least {
			t.Errorf("cohort_refused_total{reason=%q} = %v, want ≥ %v", reason, n, least)
		}
	}
	if grew := int64(peak.heap) - int64(base.heap); grew > 64<<20 {
		t.Fatalf("coordinator heap grew by %d MiB under the attack, limit 64 MiB", grew>>20)
	}
	// One goroutine per stream being served, and a few per connection (Serve, quic-go's; ~4
	// measured), with room for the honest member's calls.
	if grew, limit := peak.goroutines-base.goroutines, transport.DefaultMaxConnsPerKey*(transport.DefaultMaxIncomingStreams+12); grew > limit {
		t.Fatalf("goroutines grew by %d under the attack, limit %d", grew, limit)
	}
}

// runFresh runs the calling test alone in a new process of the test binary, with
// attackFreshEnv set, and passes on its log lines and its verdict.
func runFresh(t *testing.T) {
	args := []string{"-test.run=^" + t.Name() + "$", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), attackFreshEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("%s in a fresh process: %v\n%s", t.Name(), err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "attack_test.go:") {
			t.Log(l)
		}
	}
}

func attackField(t *testing.T, report, name string) int64 {
	t.Helper()
	for _, f := range strings.Fields(report) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in the attacker's report %q", name, report)
	return 0
}

// refusedCount reads cohort_refused_total{reason} from s's metrics.
func refusedCount(t *testing.T, s *Server, reason string) float64 {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cohort_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// syncClock is a fake clock safe for the coordinators' goroutines.
type syncClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *syncClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *syncClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// submitAs sends one signed command from key straight to the coordinator at addr over conn.
func submitAs(ctx context.Context, t *testing.T, conn *transport.Conn, sg *consensus.Signer, body consensus.Body) error {
	t.Helper()
	env, err := sg.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	req := transport.Message{Header: transport.Header{Type: protocol.MsgSubmit}}
	if err := req.SetBody(env); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = transport.Call(cctx, conn, req)
	return err
}

// TestRegistrationFloodIsRateLimited: fresh keys from one source register until the source's
// bucket (20) is empty, then are refused with a retryable error before anything reaches Raft, as
// is any other submit from a key the state does not know; an
// honest member from another source registers meanwhile; the bucket refills with the (injected)
// clock. One key's submits are limited the same way (100), whether the state would take them
// or not.
func TestRegistrationFloodIsRateLimited(t *testing.T) {
	clk := &syncClock{t: time.Unix(1_700_000_000, 0)}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	honestAddr := pc.LocalAddr().String()
	c := startClusterWith(t, 3, func(cfg *Config) {
		cfg.Limits = Limits{Now: clk.now, Source: func(a net.Addr) string {
			if a.String() == honestAddr {
				return "another office" // as if from another address
			}
			return transport.SourceOf(a)
		}}
	})
	ctx := context.Background()
	target := c.addrs[0]
	register := func(i int) error {
		id := testIdentity(t, fmt.Sprintf("sybil-%d", i))
		conn, err := transport.Dial(ctx, target, transport.Config{Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sg, err := consensus.NewSigner(id.Key, 0)
		if err != nil {
			t.Fatal(err)
		}
		return submitAs(ctx, t, conn, sg, &consensus.RegisterBody{PublicKey: id.PublicKey(), Name: fmt.Sprintf("sybil-%d", i)})
	}
	ok, limited := 0, 0
	for i := range 30 {
		err := register(i)
		switch {
		case err == nil:
			ok++
		case strings.Contains(err.Error(), "unavailable: rate limited: registrations and unregistered keys' submits from 127.0.0.1 exceed 20 at 2/s"):
			limited++
		default:
			t.Fatalf("registration %d: %v", i, err)
		}
	}
	if ok != DefaultRegisterBurst || limited != 30-DefaultRegisterBurst {
		t.Fatalf("%d registrations from one source taken and %d limited, want %d and %d", ok, limited, DefaultRegisterBurst, 30-DefaultRegisterBurst)
	}
	// Any other submit from a key the state does not know spends the same budget: it too would
	// cost a log entry.
	{
		id := testIdentity(t, "sybil-vote")
		conn, err := transport.Dial(ctx, target, transport.Config{Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		sg, err := consensus.NewSigner(id.Key, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = submitAs(ctx, t, conn, sg, &consensus.VoteBody{Proposal: 1, Yes: true})
		conn.Close()
		if err == nil || !strings.Contains(err.Error(), "rate limited: registrations and unregistered keys' submits from 127.0.0.1") {
			t.Fatalf("a vote from an unregistered key once its source's budget is spent: %v", err)
		}
	}
	// The honest member, from its own source, is not held up by the flood.
	honest, err := client.Dial(client.Config{Addrs: c.addrs, Identity: testIdentity(t, "honest"), Timeout: 15 * time.Second, PacketConn: pc})
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Close()
	if err := honest.EnsureRegistered(ctx, "honest", []string{"honest"}); err != nil {
		t.Fatalf("honest registration during the flood: %v", err)
	}
	// Nothing the flood was refused reached the state.
	q, err := honest.Query(ctx, protocol.Query{What: protocol.QueryMembers, Linearizable: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Members) != DefaultRegisterBurst+1 {
		t.Fatalf("%d members, want the %d the limit let through and the honest one", len(q.Members), DefaultRegisterBurst)
	}
	// A second later the source has 2 registrations more.
	clk.advance(time.Second)
	ok = 0
	for i := 30; i < 33; i++ {
		if register(i) == nil {
			ok++
		}
	}
	if ok != 2 {
		t.Fatalf("%d registrations taken a second later, want 2", ok)
	}

	// One registered key's submits: its bucket of 50 (refilled since it registered) empties,
	// then it is refused before the state is asked, though every vote here would be rejected
	// by it.
	id := testIdentity(t, "sybil-0")
	conn, err := transport.Dial(ctx, target, transport.Config{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sg, err := consensus.NewSigner(id.Key, uint64(clk.now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	rejected, limited := 0, 0
	for range DefaultSubmitBurst + 5 {
		err := submitAs(ctx, t, conn, sg, &consensus.VoteBody{Proposal: 4242, Yes: true})
		switch {
		case err != nil && strings.Contains(err.Error(), "rate limited: submits from "+id.NodeID().String()):
			limited++
		case err != nil:
			rejected++
		default:
			t.Fatal("a vote on a proposal that does not exist was taken")
		}
	}
	if rejected != DefaultSubmitBurst || limited != 5 {
		t.Fatalf("%d submits judged by the state and %d rate limited, want %d and 5", rejected, limited, DefaultSubmitBurst)
	}
	if src, key := refusedCount(t, c.servers[0], "rate_limited_source"), refusedCount(t, c.servers[0], "rate_limited_key"); src != 12 || key != 5 {
		t.Fatalf("cohort_refused_total: %v rate_limited_source, %v rate_limited_key, want 12 (10 + 1 + 1) and 5", src, key)
	}

	// Another registered key of the same source has a budget of its own, but the source's
	// (400, full again a second after the flood; since then 2 registrations and sybil-0's 205
	// submits spent it) bounds them together.
	id1 := testIdentity(t, "sybil-1")
	conn1, err := transport.Dial(ctx, target, transport.Config{Identity: id1})
	if err != nil {
		t.Fatal(err)
	}
	defer conn1.Close()
	sg1, err := consensus.NewSigner(id1.Key, uint64(clk.now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	judged := 0
	for range DefaultSubmitBurst {
		err := submitAs(ctx, t, conn1, sg1, &consensus.VoteBody{Proposal: 4242, Yes: true})
		if err != nil && strings.Contains(err.Error(), "rate limited: submits from 127.0.0.1 exceed 400 at 100/s") {
			break
		}
		judged++
	}
	if want := DefaultSourceBurst - 2 - (DefaultSubmitBurst + 5); judged != want {
		t.Fatalf("sybil-1 had %d submits judged before its source's budget ran out, want %d", judged, want)
	}
}

// TestLongPollsPerKeyBounded: one key has at most MaxLongPolls next-round long-polls waiting
// on a coordinator; the next is refused at once (retryable), another key has its own, and a
// place is free again when a long-poll ends.
func TestLongPollsPerKeyBounded(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	alice := newClient(t, c, "alice")
	if err := alice.EnsureRegistered(ctx, "alice", []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	operate(t, c.addrs, 1000, alice)
	res, err := alice.Submit(ctx, &consensus.ProposeBody{Name: "p", Model: "mlp:784-256-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 50, Rounds: 10, Codec: "topk:0.01+q4", OuterLR: "1", OuterMomentum: "0.8", ErrorDecay: "0.9"}, RewardPool: 1000,
		MinMembers: 1, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 500})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Submit(ctx, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
		t.Fatal(err)
	}
	target := c.addrs[0]
	waitFor(t, 15*time.Second, "cohort 1 on the target", func() bool {
		q, err := alice.QueryAt(ctx, target, protocol.Query{What: protocol.QueryCohort, ID: 1})
		return err == nil && q.Cohort != nil
	})
	poll := func(conn *transport.Conn) error {
		req := transport.Message{Header: transport.Header{Type: protocol.MsgQuery}}
		if err := req.SetBody(protocol.Query{What: protocol.QueryNextRound, ID: 1, After: 1000}); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, protocol.NextRoundWait+5*time.Second)
		defer cancel()
		_, err := transport.Call(cctx, conn, req)
		return err
	}
	dial := func(name string) *transport.Conn {
		conn, err := transport.Dial(ctx, target, transport.Config{Identity: testIdentity(t, name)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	mallory := dial("mallory")
	errs := make(chan error, DefaultMaxLongPolls)
	start := time.Now()
	for range DefaultMaxLongPolls {
		go func() { errs <- poll(mallory) }()
	}
	key := testIdentity(t, "mallory").NodeID().String()
	waitFor(t, 10*time.Second, "all long-polls waiting", func() bool {
		for _, s := range c.servers {
			if s.Addr() == target {
				s.lim.mu.Lock()
				defer s.lim.mu.Unlock()
				return s.lim.longPolls[key] == DefaultMaxLongPolls
			}
		}
		return false
	})
	err = poll(mallory)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("unavailable: too many long-polls from %s: %d waiting, limit %d", testIdentity(t, "mallory").NodeID(), DefaultMaxLongPolls, DefaultMaxLongPolls)) {
		t.Fatalf("long-poll %d of one key: err = %v", DefaultMaxLongPolls+1, err)
	}
	otherDone := make(chan error, 1)
	go func() { otherDone <- poll(dial("trent")) }()
	for range DefaultMaxLongPolls {
		if err := <-errs; err != nil {
			t.Fatalf("a long-poll within the limit: %v", err)
		}
	}
	if err := <-otherDone; err != nil {
		t.Fatalf("another key's long-poll: %v", err)
	}
	if d := time.Since(start); d < protocol.NextRoundWait {
		t.Fatalf("long-polls answered after %v, before protocol.NextRoundWait with nothing new", d)
	}
	if err := poll(mallory); err != nil {
		t.Fatalf("a long-poll after the others ended: %v", err)
	}
}
