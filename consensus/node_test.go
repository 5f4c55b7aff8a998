package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fastTimeouts are tight raft timeouts for tests on one machine.
func fastTimeouts(c *Config) {
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.LogOutput = io.Discard
	if os.Getenv("RAFTLOG") != "" {
		c.LogOutput, c.LogLevel = os.Stderr, os.Getenv("RAFTLOG")
	}
}

// cluster is a set of live nodes that test clients send commands to.
type cluster struct {
	mu    sync.Mutex
	nodes map[string]*Node
	// attempt bounds each try of apply before the client retries; zero means 2s.
	attempt time.Duration
}

func (c *cluster) live() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]*Node, 0, len(ids))
	for _, id := range ids {
		out = append(out, c.nodes[id])
	}
	return out
}

func (c *cluster) set(n *Node) {
	c.mu.Lock()
	c.nodes[n.ID()] = n
	c.mu.Unlock()
}

func (c *cluster) remove(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	delete(c.nodes, id)
	return n
}

func (c *cluster) leader() *Node {
	for _, n := range c.live() {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

func (c *cluster) waitLeader(t testing.TB, d time.Duration) *Node {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if l := c.leader(); l != nil {
			return l
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no leader after %v", d)
	return nil
}

// apply sends env to whichever node is leader, retrying the same envelope on not-leader,
// leadership loss, shutdown and timeouts, as a client does.
func (c *cluster) apply(ctx context.Context, env Envelope) (Result, error) {
	return c.applyWith(ctx, env, (*Node).Apply)
}

// bootstrap registers the first coordinator through the separate path.
func (c *cluster) bootstrap(ctx context.Context, env Envelope) (Result, error) {
	return c.applyWith(ctx, env, (*Node).BootstrapCoordinator)
}

func (c *cluster) applyWith(ctx context.Context, env Envelope, fn func(*Node, context.Context, Envelope) (Result, error)) (Result, error) {
	for {
		if l := c.leader(); l != nil {
			attempt := c.attempt
			if attempt == 0 {
				attempt = 2 * time.Second
			}
			actx, cancel := context.WithTimeout(ctx, attempt)
			res, err := fn(l, actx, env)
			cancel()
			if err == nil || !retryable(err) {
				return res, err
			}
		}
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("gave up: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrLeadershipLost) || errors.Is(err, ErrShutdown) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, raft.ErrEnqueueTimeout)
}

// waitConverged waits until every live node has applied the leader's last index and returns
// their hashes.
func (c *cluster) waitConverged(t testing.TB, d time.Duration) map[string][32]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		l := c.leader()
		if l != nil && l.Barrier(ctx) == nil {
			target := l.AppliedIndex()
			hashes := map[string][32]byte{}
			done := true
			for _, n := range c.live() {
				h, idx := n.Hash()
				if idx < target {
					done = false
					break
				}
				hashes[n.ID()] = h
			}
			if done {
				return hashes
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("nodes did not converge within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameHashes(t testing.TB, hashes map[string][32]byte) {
	t.Helper()
	var first [32]byte
	var firstID string
	for id, h := range hashes {
		if firstID == "" {
			first, firstID = h, id
			continue
		}
		if h != first {
			t.Fatalf("state hash of %s %x differs from %s %x", id, h[:6], firstID, first[:6])
		}
	}
}

func newInmemNode(t testing.TB, id string, peers []Peer, trans *raft.InmemTransport) *Node {
	cfg := Config{ID: id, InMemory: true, Transport: trans, Peers: peers}
	fastTimeouts(&cfg)
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestClusterInmemFailover: concurrent clients write through a 3-node cluster while the leader is
// killed and replaced; every command is applied exactly once and all replicas end with one hash.
func TestClusterInmemFailover(t *testing.T) {
	perClient := 60
	if testing.Short() {
		perClient = 25
	}
	const clients = 4
	trans := map[string]*raft.InmemTransport{}
	var peers []Peer
	for _, id := range []string{"n1", "n2", "n3"} {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		trans[id] = tr
		peers = append(peers, Peer{ID: id, Addr: string(addr)})
	}
	for a, ta := range trans {
		for b, tb := range trans {
			if a != b {
				ta.Connect(raft.ServerAddress(b), tb)
			}
		}
	}
	c := &cluster{nodes: map[string]*Node{}}
	for _, p := range peers {
		c.set(newInmemNode(t, p.ID, peers, trans[p.ID]))
	}
	defer func() {
		for _, n := range c.live() {
			_ = n.Shutdown()
		}
	}()
	c.waitLeader(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	mustC := func(name string, req uint64, b Body) {
		t.Helper()
		if _, err := c.apply(ctx, mustEnv(t, name, req, b)); err != nil {
			t.Fatalf("%s %s: %v", name, b.Type(), err)
		}
	}
	first := mustEnv(t, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	if _, err := c.apply(ctx, first); !errors.Is(err, ErrForbidden) {
		t.Fatalf("first coordinator through Apply: err = %v, want ErrForbidden", err)
	}
	if _, err := c.bootstrap(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Afterwards nobody else can self-register as a coordinator, on either path, without approval.
	for _, fn := range []func(context.Context, Envelope) (Result, error){c.apply, c.bootstrap} {
		if _, err := fn(ctx, mustEnv(t, "mallory", 1, &AddCoordinatorBody{PublicKey: testPub("mallory"), Name: "m"})); !errors.Is(err, ErrForbidden) {
			t.Fatalf("self-signed second coordinator: err = %v, want ErrForbidden", err)
		}
	}
	for i := 0; i < clients; i++ {
		m := fmt.Sprintf("m%d", i)
		mustC(m, 1, &RegisterBody{PublicKey: testPub(m), Name: m, Contributors: []string{m + "-data"}})
		mustC("c1", uint64(2+i), &GrantBody{Member: testID(m), Votes: 1})
	}
	mustC("c1", 100, &SetLimitsBody{Limits: looseLimits})

	var applied atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			m := fmt.Sprintf("m%d", i)
			for k := 0; k < perClient; k++ {
				env, err := NewEnvelope(testKey(m), uint64(2+k), testProposal(fmt.Sprintf("%s-%d", m, k), 1, 0, 1000))
				if err != nil {
					errs <- err
					return
				}
				if _, err := c.apply(ctx, env); err != nil {
					errs <- fmt.Errorf("%s request %d: %w", m, 2+k, err)
					return
				}
				applied.Add(1)
			}
		}(i)
	}

	// Kill the leader a third of the way in, then replace it with a fresh node.
	for applied.Load() < int64(clients*perClient/3) {
		time.Sleep(time.Millisecond)
	}
	old := c.leader()
	if old == nil {
		old = c.waitLeader(t, 5*time.Second)
	}
	c.remove(old.ID())
	if err := old.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, tr := range trans {
		tr.Disconnect(raft.ServerAddress(old.ID()))
	}
	newLeader := c.waitLeader(t, 5*time.Second)
	if newLeader.ID() == old.ID() {
		t.Fatal("the dead node is still leader")
	}
	addr, tr := raft.NewInmemTransport("n4")
	for id, other := range trans {
		if id == old.ID() {
			continue
		}
		other.Connect(addr, tr)
		tr.Connect(raft.ServerAddress(id), other)
	}
	trans["n4"] = tr
	n4 := newInmemNode(t, "n4", nil, tr)
	c.set(n4)
	for {
		l := c.waitLeader(t, 5*time.Second)
		err := l.AddVoter(ctx, "n4", string(addr))
		if err == nil {
			err = l.RemoveServer(ctx, old.ID())
		}
		if err == nil {
			break
		}
		if !retryable(err) {
			t.Fatal(err)
		}
	}

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hashes := c.waitConverged(t, 20*time.Second)
	if len(hashes) != 3 {
		t.Fatalf("%d live nodes, want 3", len(hashes))
	}
	sameHashes(t, hashes)

	// Exactly once: every proposal present once on every node, none extra.
	for _, n := range c.live() {
		err := n.View(func(s *State) error {
			ps := s.Proposals()
			if len(ps) != clients*perClient {
				return fmt.Errorf("%s holds %d proposals, want %d", n.ID(), len(ps), clients*perClient)
			}
			seen := map[string]bool{}
			for _, p := range ps {
				if seen[p.Name] {
					return fmt.Errorf("%s: proposal %q applied twice", n.ID(), p.Name)
				}
				seen[p.Name] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestNodeFollowerAnswersNotLeader(t *testing.T) {
	trans := map[string]*raft.InmemTransport{}
	var peers []Peer
	for _, id := range []string{"a", "b", "c"} {
		addr, tr := raft.NewInmemTransport(raft.ServerAddress("addr-" + id))
		trans[id] = tr
		peers = append(peers, Peer{ID: id, Addr: string(addr)})
	}
	for _, ta := range trans {
		for _, p := range peers {
			ta.Connect(raft.ServerAddress(p.Addr), trans[p.ID])
		}
	}
	c := &cluster{nodes: map[string]*Node{}}
	for _, p := range peers {
		c.set(newInmemNode(t, p.ID, peers, trans[p.ID]))
	}
	defer func() {
		for _, n := range c.live() {
			_ = n.Shutdown()
		}
	}()
	c.waitLeader(t, 5*time.Second)
	env := mustEnv(t, "c1", 1, &AddCoordinatorBody{PublicKey: testPub("c1"), Name: "c1"})
	// Every follower answers not-leader naming the leader (retrying while a follower has not
	// heard from a leader yet, or leadership moves under load).
	checked := map[string]bool{}
	for end := time.Now().Add(10 * time.Second); len(checked) < 2 && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		l := c.leader()
		if l == nil {
			continue
		}
		for _, n := range c.live() {
			if n == l || checked[n.ID()] {
				continue
			}
			_, err := n.Apply(context.Background(), env)
			if !errors.Is(err, ErrNotLeader) {
				if n.IsLeader() {
					continue // it became leader meanwhile
				}
				t.Fatalf("follower %s: err = %v, want ErrNotLeader", n.ID(), err)
			}
			var nl *NotLeaderError
			if errors.As(err, &nl) && nl.LeaderID == l.ID() && nl.LeaderAddr == "addr-"+l.ID() {
				checked[n.ID()] = true
			}
		}
	}
	if len(checked) < 2 {
		t.Fatalf("followers never named the leader: %v", checked)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.bootstrap(ctx, env)
	if err != nil || res.Member != testID("c1") {
		t.Fatalf("leader apply: %+v %v", res, err)
	}
	l := c.waitLeader(t, 5*time.Second)
	// Verify on any node checks against its local state without writing.
	if err := l.Verify(mustEnv(t, "eve", 1, &VoteBody{Proposal: 1})); !errors.Is(err, ErrUnknownIssuer) {
		t.Fatalf("Verify of an unknown issuer: %v", err)
	}
	// A command the state rejects comes back as the state's error, not a raft error.
	_, err = c.apply(ctx, mustEnv(t, "eve", 1, &VoteBody{Proposal: 1, Yes: true}))
	if !errors.Is(err, ErrUnknownIssuer) {
		t.Fatalf("unknown member through raft: err = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ID: "a", InMemory: true, BindAddr: "127.0.0.1:0"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *Config){
		"no id":        func(c *Config) { c.ID = "" },
		"no dir":       func(c *Config) { c.InMemory = false },
		"no transport": func(c *Config) { c.BindAddr = "" },
		"max append":   func(c *Config) { c.MaxAppendEntries = 2000 },
		"negative":     func(c *Config) { c.ElectionTimeout = -1 },
		"peer twice":   func(c *Config) { c.Peers = []Peer{{ID: "a", Addr: "x"}, {ID: "a", Addr: "y"}} },
		"not in peers": func(c *Config) { c.Peers = []Peer{{ID: "b", Addr: "x"}} },
		"empty peer":   func(c *Config) { c.Peers = []Peer{{ID: "a"}} },
		"non-voter":    func(c *Config) { c.Peers = []Peer{{ID: "a", Addr: "x", Suffrage: Nonvoter}} },
		"log level":    func(c *Config) { c.LogLevel = "loud" },
	}
	for name, mod := range cases {
		c := ok
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
}

// freeAddrs reserves n distinct loopback TCP addresses.
func freeAddrs(t testing.TB, n int) []string {
	var out []string
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

func tcpConfig(id, dir, addr string, peers []Peer) Config {
	cfg := Config{ID: id, Dir: dir, BindAddr: addr, Peers: peers,
		SnapshotThreshold: 32, TrailingLogs: 8, SnapshotInterval: 50 * time.Millisecond}
	fastTimeouts(&cfg)
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	return cfg
}

// TestClusterTCPRestartAndSnapshotInstall runs 3 nodes over real TCP with on-disk stores: a
// follower is stopped, the others write on and compact their logs, the follower restarts from its
// directory and can only catch up by installing the leader's snapshot; then the whole cluster
// restarts from disk.
func TestClusterTCPRestartAndSnapshotInstall(t *testing.T) {
	addrs := freeAddrs(t, 3)
	base := t.TempDir()
	var peers []Peer
	for i, a := range addrs {
		peers = append(peers, Peer{ID: fmt.Sprintf("t%d", i+1), Addr: a})
	}
	c := &cluster{nodes: map[string]*Node{}}
	// The leader's clock is driven by the test so the stamps equal the scenario's.
	var clock atomic.Int64
	start := func(p Peer) {
		cfg := tcpConfig(p.ID, filepath.Join(base, p.ID), p.Addr, peers)
		cfg.Now = func() time.Time { return time.UnixMilli(clock.Load()) }
		n, err := NewNode(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.set(n)
	}
	for _, p := range peers {
		start(p)
	}
	defer func() {
		for _, n := range c.live() {
			_ = n.Shutdown()
		}
	}()
	c.waitLeader(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	members, rounds, pads := 4, uint32(6), 120
	if testing.Short() {
		members, rounds, pads = 3, 3, 48
	}
	cmds := scenario(t, 5, members, rounds)
	applyRange := func(cs []Command) {
		t.Helper()
		for i, cmd := range cs {
			clock.Store(cmd.Time)
			apply := c.apply
			if cmd.Env.Type == CmdAddCoordinator && cmd.Env.Issuer == testID("c1") && cmd.Env.RequestID == 1 {
				apply = c.bootstrap
			}
			if _, err := apply(ctx, cmd.Env); err != nil {
				t.Fatalf("command %d (%s): %v", i, cmd.Env.Type, err)
			}
		}
	}
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.0f ms %s", float64(time.Since(t0).Microseconds())/1000, what) }
	defer phase("end")
	third := len(cmds) / 3
	applyRange(cmds[:third])
	sameHashes(t, c.waitConverged(t, 10*time.Second))

	phase("first third applied")
	// Stop a follower and write on.
	var follower Peer
	for _, p := range peers {
		if !c.nodes[p.ID].IsLeader() {
			follower = p
			break
		}
	}
	stopped := c.remove(follower.ID)
	_, stoppedAt := stopped.Hash()
	if err := stopped.Shutdown(); err != nil {
		t.Fatal(err)
	}
	applyRange(cmds[third:])
	// With the same stamps, the replicated state is exactly a local replay of the commands.
	local := applyAll(t, cmds)
	for id, h := range c.waitConverged(t, 10*time.Second) {
		if h != local.Hash() {
			t.Fatalf("%s: replicated state differs from a local replay of the same commands", id)
		}
	}
	phase("rest applied")
	// Pad the log past the snapshot threshold with more (valid, new) commands.
	// Independent commands, sent concurrently so they share disk writes.
	var pwg sync.WaitGroup
	perr := make(chan error, pads)
	for k := 0; k < pads; k++ {
		pwg.Add(1)
		go func(k int) {
			defer pwg.Done()
			m := fmt.Sprintf("pad%d", k)
			if _, err := c.apply(ctx, mustEnv(t, m, 1, &RegisterBody{PublicKey: testPub(m), Name: m})); err != nil {
				perr <- err
			}
		}(k)
	}
	pwg.Wait()
	close(perr)
	for err := range perr {
		t.Fatal(err)
	}
	l := c.waitLeader(t, 5*time.Second)
	if err := l.Snapshot(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		t.Fatal(err)
	}
	first, err := l.logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first <= stoppedAt+1 {
		t.Fatalf("leader log starts at %d, not compacted past the follower's %d", first, stoppedAt)
	}

	phase("padded and snapshotted")
	// Restart the follower from its directory: it must install the leader's snapshot.
	start(follower)
	hashes := c.waitConverged(t, 20*time.Second)
	phase("follower caught up")
	sameHashes(t, hashes)
	restarted := c.live()[0]
	for _, n := range c.live() {
		if n.ID() == follower.ID {
			restarted = n
		}
	}
	var snapIdx uint64
	fmt.Sscan(restarted.Stats()["last_snapshot_index"], &snapIdx)
	if snapIdx < first-1 {
		t.Fatalf("restarted follower's last snapshot index %d; expected an installed snapshot at or past %d", snapIdx, first-1)
	}
	want := hashes[follower.ID]

	// Restart the whole cluster from disk.
	for _, n := range c.live() {
		c.remove(n.ID())
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range peers {
		start(p)
	}
	phase("all shut down")
	c.waitLeader(t, 10*time.Second)
	phase("leader after full restart")
	hashes = c.waitConverged(t, 20*time.Second)
	sameHashes(t, hashes)
	if hashes[follower.ID] != want {
		t.Fatal("state after a full restart differs from before")
	}
}
