package consensus

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cohortlab/cohort/transport"
)

// BenchmarkStateApply: one replica's FSM throughput (decode, ed25519 verify, apply) on receipts,
// the ceiling for the replicated rate.
func BenchmarkStateApply(b *testing.B) {
	const members = 512
	s, next, do := benchState(b)
	ids := benchCohort(b, members, 2, func(name string, body Body) { do(next(name, body)) })
	var cmds [][]byte
	round := uint32(0)
	for len(cmds) < b.N {
		round++
		for _, c := range benchRound(b, round, ids, next) {
			enc, _ := c.Marshal()
			cmds = append(cmds, enc)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := DecodeCommand(cmds[i])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Apply(c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// benchCohort registers members, passes a proposal with many rounds and joins everyone; it
// returns the sorted member IDs. apply runs one command.
func benchCohort(b testing.TB, members int, period int64, apply func(name string, body Body)) []string {
	apply("c1", &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	var ids []string
	for i := 0; i < members; i++ {
		m := fmt.Sprintf("bm%d", i)
		ids = append(ids, testID(m))
		apply(m, &RegisterBody{PublicKey: testPub(m), Name: m, Contributors: []string{m}})
	}
	sort.Strings(ids)
	apply("c1", &SetLimitsBody{Limits: looseLimits})
	apply("c1", &FundBody{Amount: 1 << 50})
	apply("c1", &GrantBody{Member: testID("bm0"), Votes: 1})
	apply("bm0", testProposal("bench", 1<<30, 1<<50, period))
	apply("bm0", &VoteBody{Proposal: 1, Yes: true})
	apply("c1", &TallyBody{Proposal: 1})
	for i := 0; i < members; i++ {
		m := fmt.Sprintf("bm%d", i)
		apply(m, &JoinBody{Cohort: 1, Contributors: []ContributorData{{Name: m, Fingerprint: []byte(m), Samples: 100}}})
	}
	return ids
}

// benchRound returns the commands of one round: open, a receipt from every member, the score
// commit paying every member, close.
func benchRound(b testing.TB, r uint32, ids []string, next func(name string, body Body) Command) []Command {
	prev := []byte("m0")
	if r > 1 {
		prev = []byte(fmt.Sprintf("m%d", r-1))
	}
	out := []Command{next("c1", &OpenRoundBody{Cohort: 1, Number: r, Participants: ids,
		Slices: []SliceAssignment{{Start: 0, End: 1000, Aggregator: testID("c1")}}, ModelHash: prev,
		Deadline: 1 << 60})}
	var ws []Weight
	for i := range ids {
		m := fmt.Sprintf("bm%d", i)
		out = append(out, next(m, &ReceiptBody{Cohort: 1, Round: r, SamplesUsed: 100, BytesSent: 1 << 20}))
		ws = append(ws, Weight{Contributor: ContributorKey(testID(m), m), Weight: uint64(i%7 + 1)})
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].Contributor < ws[j].Contributor })
	out = append(out, next("c1", &CloseRoundBody{Cohort: 1, Round: r, ModelHash: []byte(fmt.Sprintf("m%d", r))}))
	out = append(out, next("c1", &ScoreCommitBody{Cohort: 1, Round: r, Data: ws, Compute: ws}))
	return out
}

func startTCPCluster(b testing.TB, tune func(*Config)) (*cluster, []Peer) {
	addrs := freeAddrs(b, 3)
	dir := b.TempDir()
	var peers []Peer
	for i, a := range addrs {
		peers = append(peers, Peer{ID: fmt.Sprintf("b%d", i+1), Addr: a})
	}
	c := &cluster{nodes: map[string]*Node{}}
	for _, p := range peers {
		cfg := Config{ID: p.ID, Dir: filepath.Join(dir, p.ID), BindAddr: p.Addr, Peers: peers, LogOutput: io.Discard}
		if tune != nil {
			tune(&cfg)
		}
		n, err := NewNode(cfg)
		if err != nil {
			b.Fatal(err)
		}
		c.set(n)
	}
	c.waitLeader(b, 30*time.Second)
	return c, peers
}

// BenchmarkLedgerWritesTCP: replicated writes per second on 3 local nodes over TCP with on-disk
// stores, batched (BatchApplyCh, MaxAppendEntries 1024) under many concurrent Applies. The
// workload is whole rounds of a 1024-member cohort: open, 1024 signed receipts, a score commit
// paying 1024 contributors, close.
func BenchmarkLedgerWritesTCP(b *testing.B) { ledgerWrites(b, nil) }

// BenchmarkLedgerWritesTLS is BenchmarkLedgerWritesTCP with raft on the coordinators' stream layer:
// TLS 1.3 over TCP, both ends presenting ed25519 node keys pinned by the other voters.
func BenchmarkLedgerWritesTLS(b *testing.B) { ledgerWrites(b, withTLS(b)) }

// withTLS gives every node of a startTCPCluster an authenticated stream layer admitting exactly
// the cluster's node keys.
func withTLS(b testing.TB) func(*Config) {
	ids := map[string]*transport.Identity{}
	allowed := map[transport.NodeID]bool{}
	for i := 1; i <= 3; i++ {
		seed := sha256.Sum256([]byte(fmt.Sprintf("b%d-node", i)))
		id, err := transport.NewIdentity(ed25519.NewKeyFromSeed(seed[:]))
		if err != nil {
			b.Fatal(err)
		}
		ids[fmt.Sprintf("b%d", i)] = id
		allowed[id.NodeID()] = true
	}
	allow := func(id transport.NodeID) error {
		if !allowed[id] {
			return fmt.Errorf("not a voter")
		}
		return nil
	}
	return func(c *Config) {
		ln, err := transport.ListenStream(c.BindAddr, transport.StreamConfig{Identity: ids[c.ID], Allow: allow})
		if err != nil {
			b.Fatal(err)
		}
		c.Stream = ln
	}
}

func ledgerWrites(b *testing.B, tune func(*Config)) {
	const members, workers = 1024, 512
	var skip atomic.Int64
	c, _ := startTCPCluster(b, func(c *Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skip.Load())) }
		if tune != nil {
			tune(c)
		}
	})
	defer func() {
		for _, n := range c.live() {
			_ = n.Shutdown()
		}
	}()
	ctx := context.Background()
	req := map[string]uint64{}
	next := func(name string, body Body) Command {
		req[name]++
		return Command{Env: mustEnv(b, name, req[name], body)}
	}
	// Setup: concurrent registers and joins, sequential otherwise.
	var setup []Command
	ids := benchCohort(b, members, 60_000, func(name string, body Body) { setup = append(setup, next(name, body)) })
	regs, joins := setup[1:1+members], setup[len(setup)-members:]
	mid := setup[1+members : len(setup)-members]
	if _, err := c.bootstrap(ctx, setup[0].Env); err != nil {
		b.Fatal(err)
	}
	runAll(b, c, regs, workers)
	runAll(b, c, mid[:len(mid)-1], 1) // limits, treasury, grant, proposal and vote
	skip.Store(int64(time.Hour))      // the leaders' clock passes the voting deadline
	runAll(b, c, mid[len(mid)-1:], 1) // the tally
	runAll(b, c, joins, workers)

	var rounds [][]Command
	total := 0
	for r := uint32(1); total < b.N; r++ {
		cmds := benchRound(b, r, ids, next)
		rounds = append(rounds, cmds)
		total += len(cmds)
	}
	b.ResetTimer()
	counter := c.live()[0]
	e0, n0 := counter.ApplyCounts()
	start, cpu0 := time.Now(), cpuTime()
	for _, cmds := range rounds {
		runAll(b, c, cmds[:1], 1)
		runAll(b, c, cmds[1:len(cmds)-2], workers)
		runAll(b, c, cmds[len(cmds)-2:len(cmds)-1], 1)
		runAll(b, c, cmds[len(cmds)-1:], 1)
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(total)/el.Seconds(), "writes/s")
	// CPU time of the whole process (3 nodes + clients) per write: on a machine shared with other
	// work, writes/s understates what 2 free cores do, and 2 s / cpu-µs-per-write estimates that.
	b.ReportMetric(float64(cpu.Microseconds())/float64(total), "cpu-µs/write")
	hashes := c.waitConverged(b, 30*time.Second)
	sameHashes(b, hashes)
	e1, n1 := counter.ApplyCounts()
	b.ReportMetric(float64(e1-e0)/float64(n1-n0), "entries/write")
}

// cpuTime returns the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runAll applies commands through the cluster's leader with the given concurrency.
func runAll(b testing.TB, c *cluster, cmds []Command, workers int) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ch := make(chan Envelope)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < workers && w < len(cmds); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for env := range ch {
				if _, err := c.apply(ctx, env); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for _, cmd := range cmds {
		ch <- cmd.Env
	}
	close(ch)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// BenchmarkFailover measures the time from the leader's shutdown to a new leader applying a
// write, with hashicorp/raft's default timeouts (1s/1s/500ms), the Node's defaults
// (500ms/500ms/250ms) and tuned ones for one machine (150ms/150ms/75ms).
func BenchmarkFailover(b *testing.B) {
	for _, tc := range []struct {
		name string
		tune func(*Config)
	}{
		{"raft-defaults", func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		}},
		{"node-defaults", nil},
		{"node-defaults-tls", withTLS(b)},
		{"tuned", func(c *Config) {
			c.HeartbeatTimeout, c.ElectionTimeout = 150*time.Millisecond, 150*time.Millisecond
			c.LeaderLeaseTimeout, c.CommitTimeout = 75*time.Millisecond, 5*time.Millisecond
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var total, worst time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				c, _ := startTCPCluster(b, tc.tune)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				if _, err := c.bootstrap(ctx, mustEnv(b, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})); err != nil {
					b.Fatal(err)
				}
				old := c.leader()
				c.remove(old.ID())
				b.StartTimer()
				start := time.Now()
				_ = old.Shutdown()
				if _, err := c.apply(ctx, mustEnv(b, "m1", 1, &RegisterBody{PublicKey: testPub("m1"), Name: "m1"})); err != nil {
					b.Fatal(err)
				}
				d := time.Since(start)
				b.StopTimer()
				cancel()
				total += d
				if d > worst {
					worst = d
				}
				for _, n := range c.live() {
					_ = n.Shutdown()
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/failover")
			b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
		})
	}
}

// BenchmarkReplicationTCP is the replication pipeline's ceiling on the same 3-node TCP cluster:
// raft, bbolt and the FSM's decoding with no signature check, measured with unsigned envelopes
// from an unknown issuer, which the state rejects before any ed25519 work. The difference from
// BenchmarkLedgerWritesTCP is the cost of verifying every command on every replica.
func BenchmarkReplicationTCP(b *testing.B) {
	const workers = 512
	c, _ := startTCPCluster(b, nil)
	defer func() {
		for _, n := range c.live() {
			_ = n.Shutdown()
		}
	}()
	body := &ReceiptBody{Cohort: 1, Round: 1, SamplesUsed: 100, BytesSent: 1 << 20}
	env, err := NewEnvelope(testKey("nobody"), 1, body)
	if err != nil {
		b.Fatal(err)
	}
	envs := make([]Envelope, b.N)
	for i := range envs {
		e := env
		e.RequestID = uint64(i + 1)
		e.Sig = nil
		envs[i] = e
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ch := make(chan Envelope)
	var wg sync.WaitGroup
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range ch {
				for {
					l := c.leader()
					if l == nil {
						time.Sleep(time.Millisecond)
						continue
					}
					_, err := l.Apply(ctx, e)
					if errors.Is(err, ErrUnsigned) {
						break
					}
					if !retryable(err) {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	for _, e := range envs {
		ch <- e
	}
	close(ch)
	wg.Wait()
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "writes/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/write")
}

// benchState returns a fresh state, a command maker that signs bodies with increasing request IDs
// and clock stamps, and a function applying a command (failing the benchmark on rejection).
func benchState(b *testing.B) (*State, func(string, Body) Command, func(Command)) {
	s := NewState()
	req := map[string]uint64{}
	now := int64(1000)
	next := func(name string, body Body) Command {
		req[name]++
		now++
		return Command{Version: Version, Time: now, Env: mustEnv(b, name, req[name], body)}
	}
	do := func(c Command) {
		if _, err := s.Apply(c); err != nil {
			b.Fatal(err)
		}
	}
	return s, next, do
}

// BenchmarkSnapshot: encoding (on the FSM goroutine, blocking Apply) and decoding the state of a
// 1024-member cohort after 20 rounds (20k receipts, 20k payouts).
func BenchmarkSnapshot(b *testing.B) {
	s, next, do := benchState(b)
	ids := benchCohort(b, 1024, 2, func(name string, body Body) { do(next(name, body)) })
	for r := uint32(1); r <= 20; r++ {
		for _, c := range benchRound(b, r, ids, next) {
			do(c)
		}
	}
	snap, err := s.MarshalSnapshot()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("marshal", func(b *testing.B) {
		b.SetBytes(int64(len(snap)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := s.MarshalSnapshot(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(snap)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := UnmarshalSnapshot(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
