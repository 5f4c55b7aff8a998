package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// ErrLeadershipLost: the node lost leadership while the command was being committed; it may or
// may not have been applied. Retry with the same envelope on the new leader: the request ID makes
// the retry safe.
var ErrLeadershipLost = errors.New("consensus: leadership lost, outcome unknown")

// Peer is one server of the cluster: a voter, or a non-voter that follows the log.
type Peer struct {
	ID   string // raft server ID
	Addr string // transport address, e.g. "127.0.0.1:7001"
	// Key is the voter's coordinator key ID (IDOf its public key), pinned by the operators'
	// shared voter list; empty in Servers' answers and where keys are not used.
	Key string
	// Suffrage is the server's part in elections and commits: Voter or Nonvoter in Servers'
	// answers. In Config.Peers, which lists the initial voters, it is Voter or empty.
	Suffrage Suffrage
}

// Suffrage says whether a server votes: a voter counts toward the quorum and may become leader;
// a non-voter receives the log and applies it like any replica, but never votes or campaigns
// (AddNonvoter).
type Suffrage string

// Suffrages.
const (
	Voter    Suffrage = "voter"
	Nonvoter Suffrage = "nonvoter"
)

// Config configures a Node. Zero values mean the documented defaults.
type Config struct {
	// ID is this node's raft server ID. Required.
	ID string
	// Dir holds raft.db (log and stable store, bbolt) and snapshots/. Required unless InMemory.
	Dir string
	// InMemory keeps log, stable store and snapshots in memory (tests, simulations).
	InMemory bool
	// BindAddr is the TCP address to listen on for the default transport, e.g. "127.0.0.1:7001".
	// Required when Transport is nil.
	BindAddr string
	// AdvertiseAddr is the address peers dial; if zero, BindAddr (which must then be a concrete
	// IP and port).
	AdvertiseAddr string
	// Stream carries raft's RPCs instead of plain TCP on BindAddr: a listener that hands out only
	// connections from authenticated, admitted voters, and a dialer that reaches only them (the
	// coordinator passes transport.StreamListener: TLS 1.3 pinned to coordinator keys). The Node
	// closes it on Shutdown. With neither Stream nor Transport, raft speaks plain TCP on BindAddr,
	// which anyone who can reach the port can forge: for benchmarks and trusted networks only.
	Stream StreamLayer
	// Transport replaces the TCP transport (tests use raft.NewInmemTransport). The Node does not
	// close a transport it was given.
	Transport raft.Transport
	// KeyID is this node's coordinator key ID. As leader, the node stamps it on every entry it
	// appends (Command.Leader), and the state accepts round commands only from that key; Apply
	// refuses them at once when another key issued them.
	KeyID string
	// Peers are the initial voters, this node included. A node with no existing state and
	// non-empty Peers bootstraps the cluster with them (every initial voter may do so with the
	// same list). A node with empty Peers waits to be added with AddVoter by the leader.
	Peers []Peer

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and CommitTimeout tune raft; zero
	// means 500ms, 500ms, 250ms and 50ms: half of hashicorp/raft's defaults, which measured
	// 2.2–3.3 s leader failover on 3 local nodes against the ≤ 3 s target (see BenchmarkFailover).
	// Raise them for voters on high-latency links.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// MaxAppendEntries is the most entries per append RPC and per FSM batch; zero means 1024 (the
	// largest raft accepts). Concurrent Applies share entries through group commit (batch.go);
	// with BatchApplyCh (always on) the entries raft has queued share one disk write and one RPC
	// round, and a lagging follower catches up in large RPCs.
	MaxAppendEntries int
	// SnapshotThreshold, SnapshotInterval and TrailingLogs control log compaction; zero means
	// raft's defaults (8192 entries, 120s, 10240 entries).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// SnapshotRetain is how many snapshots to keep on disk; zero means 2.
	SnapshotRetain int
	// ApplyTimeout bounds Apply, Barrier and membership changes when the context has no deadline;
	// zero means 10s.
	ApplyTimeout time.Duration
	// Now stamps commands with the leader's time; nil means time.Now.
	Now func() time.Time
	// LogOutput receives raft's log lines; nil means os.Stderr. LogLevel is an hclog level name;
	// zero means "warn".
	LogOutput io.Writer
	LogLevel  string
}

// Validate checks the config without changing it.
func (c *Config) Validate() error {
	switch {
	case c.ID == "":
		return errf(ErrConfig, "ID is empty")
	case c.Dir == "" && !c.InMemory:
		return errf(ErrConfig, "Dir is empty and InMemory is false")
	case c.Transport == nil && c.Stream == nil && c.BindAddr == "":
		return errf(ErrConfig, "none of BindAddr, Stream and Transport is set")
	case c.Transport != nil && c.Stream != nil:
		return errf(ErrConfig, "Stream and Transport exclude each other")
	case c.MaxAppendEntries < 0 || c.MaxAppendEntries > 1024:
		return errf(ErrConfig, "MaxAppendEntries %d outside 0..1024", c.MaxAppendEntries)
	case c.SnapshotRetain < 0:
		return errf(ErrConfig, "SnapshotRetain %d < 0", c.SnapshotRetain)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"HeartbeatTimeout", c.HeartbeatTimeout}, {"ElectionTimeout", c.ElectionTimeout},
		{"LeaderLeaseTimeout", c.LeaderLeaseTimeout}, {"CommitTimeout", c.CommitTimeout},
		{"SnapshotInterval", c.SnapshotInterval}, {"ApplyTimeout", c.ApplyTimeout}} {
		if d.v < 0 {
			return errf(ErrConfig, "%s %v < 0", d.name, d.v)
		}
	}
	seen := map[string]bool{}
	self := false
	for _, p := range c.Peers {
		if p.ID == "" || p.Addr == "" {
			return errf(ErrConfig, "peer %q at %q: ID and Addr are required", p.ID, p.Addr)
		}
		if seen[p.ID] {
			return errf(ErrConfig, "peer %q listed twice", p.ID)
		}
		if p.Suffrage != "" && p.Suffrage != Voter {
			return errf(ErrConfig, "peer %q: the initial servers are voters, not %q (non-voters are added with AddNonvoter)", p.ID, p.Suffrage)
		}
		seen[p.ID] = true
		self = self || p.ID == c.ID
	}
	if len(c.Peers) > 0 && !self {
		return errf(ErrConfig, "Peers do not include this node %q", c.ID)
	}
	if c.LogLevel != "" && hclog.LevelFromString(c.LogLevel) == hclog.NoLevel {
		return errf(ErrConfig, "LogLevel %q", c.LogLevel)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = 1024
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.LogOutput == nil {
		c.LogOutput = os.Stderr
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	return c
}

// Node is one replica of the coordinator state: a raft node whose FSM is a State.
type Node struct {
	cfg       Config
	raft      *raft.Raft
	fsm       *fsm
	transport raft.Transport
	ownsTrans bool
	bolt      *raftboltdb.BoltStore
	logs      raft.LogStore
	commits   committer // group commit of Apply and BootstrapCoordinator
}

// NewNode opens (or creates) the node's stores, starts raft, and bootstraps the cluster when the
// node has no state yet and cfg.Peers is set.
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft " + cfg.ID, Level: hclog.LevelFromString(cfg.LogLevel),
		Output: cfg.LogOutput})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = logger
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	setDur := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	setDur(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setDur(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setDur(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setDur(&rc.CommitTimeout, cfg.CommitTimeout)
	setDur(&rc.SnapshotInterval, cfg.SnapshotInterval)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}

	n := &Node{cfg: cfg, fsm: newFSM()}
	n.commits.n = n
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("consensus: create %s: %w", cfg.Dir, err)
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")})
		if err != nil {
			return nil, fmt.Errorf("consensus: open log store in %s: %w", cfg.Dir, err)
		}
		n.bolt = bolt
		cache, err := raft.NewLogCache(4096, bolt)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("consensus: log cache: %w", err)
		}
		logs, stable = cache, bolt
		fss, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, logger)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("consensus: snapshot store in %s: %w", cfg.Dir, err)
		}
		snaps = fss
	}

	// MaxRPCsInFlight 1: replication without hashicorp/raft's pipeline. With the pipeline's
	// default of 2 in flight, a follower that answers an append with Success=false can leave the
	// pipeline's sender and its response decoder each waiting on the other (the leader then
	// stops replicating to that follower, and Shutdown waits for ever: seen as a coordinator
	// test stuck in Close for 8 minutes on a loaded machine). HashiCorp measured the pipeline to
	// bring little beyond batching, which the group commit does (batch.go).
	switch {
	case cfg.Transport != nil:
		n.transport = cfg.Transport
	case cfg.Stream != nil:
		n.transport, n.ownsTrans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: raftStream{cfg.Stream}, MaxPool: 4, MaxRPCsInFlight: 1, Timeout: 10 * time.Second, Logger: logger}), true
	default:
		adv := cfg.AdvertiseAddr
		if adv == "" {
			adv = cfg.BindAddr
		}
		addr, err := net.ResolveTCPAddr("tcp", adv)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("%w: advertise address %q: %w", ErrConfig, adv, err)
		}
		t, err := raft.NewTCPTransportWithConfig(cfg.BindAddr, addr, &raft.NetworkTransportConfig{
			MaxPool: 4, MaxRPCsInFlight: 1, Timeout: 10 * time.Second, Logger: logger})
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("consensus: listen on %s: %w", cfg.BindAddr, err)
		}
		n.transport, n.ownsTrans = t, true
	}

	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		n.closeAll()
		return nil, fmt.Errorf("consensus: read state in %s: %w", cfg.Dir, err)
	}
	n.logs = logs
	r, err := raft.NewRaft(rc, n.fsm, logs, stable, snaps, n.transport)
	if err != nil {
		n.closeAll()
		return nil, fmt.Errorf("consensus: start raft: %w", err)
	}
	n.raft = r
	if !existing && len(cfg.Peers) > 0 {
		var servers []raft.Server
		for _, p := range cfg.Peers {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil &&
			!errors.Is(err, raft.ErrCantBootstrap) {
			_ = n.Shutdown()
			return nil, fmt.Errorf("consensus: bootstrap: %w", err)
		}
	}
	return n, nil
}

// StreamLayer is what raft's RPCs travel on (Config.Stream).
type StreamLayer interface {
	net.Listener
	// Dial connects to the voter at addr within timeout.
	Dial(addr string, timeout time.Duration) (net.Conn, error)
}

type raftStream struct{ StreamLayer }

func (r raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return r.StreamLayer.Dial(string(addr), timeout)
}

func (n *Node) closeStores() {
	if n.bolt != nil {
		_ = n.bolt.Close()
	}
}

func (n *Node) closeAll() {
	if n.ownsTrans {
		if c, ok := n.transport.(raft.WithClose); ok {
			_ = c.Close()
		}
	}
	n.closeStores()
}

// ID returns the node's raft server ID.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns the node's transport address.
func (n *Node) Addr() string { return string(n.transport.LocalAddr()) }

func (n *Node) timeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return n.cfg.ApplyTimeout
}

// wait waits for a raft future or the context, whichever ends first.
func wait(ctx context.Context, errFn func() error) error {
	done := make(chan error, 1)
	go func() { done <- errFn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *Node) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		id, addr := n.Leader()
		return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	return fmt.Errorf("consensus: raft: %w", err)
}

// Apply stamps env with the leader's clock, replicates it and returns the state's Result once it
// is applied on this node. Envelopes that arrive while an entry is in flight are committed
// together, in one batch entry, when it completes; each caller still gets its own Result. On a
// follower it returns a *NotLeaderError (errors.Is ErrNotLeader) naming the leader; after
// ErrLeadershipLost, a timeout or a cancelled context the outcome is unknown, and the client
// retries the same envelope (same request ID) on the leader.
//
// Apply refuses (ErrForbidden) an AddCoordinator while the state has no coordinator: the first
// coordinator key goes through BootstrapCoordinator, which the coordinator service calls with its
// own key only, so no client can register itself as the first coordinator.
func (n *Node) Apply(ctx context.Context, env Envelope) (Result, error) {
	if n.raft.State() != raft.Leader {
		return Result{}, n.mapErr(raft.ErrNotLeader)
	}
	if env.Type.leaderOnly() && n.cfg.KeyID != "" && env.Issuer != n.cfg.KeyID {
		return Result{}, errf(ErrForbidden, "%s issued by %s: only the leader (%s) issues round commands", env.Type, env.Issuer, n.cfg.KeyID)
	}
	if env.Type == CmdAddCoordinator && !n.hasCoordinator() {
		// A new leader's state may lag what is committed: catch up before refusing.
		if err := n.Barrier(ctx); err != nil {
			return Result{}, err
		}
		if !n.hasCoordinator() {
			return Result{}, errf(ErrForbidden, "the first coordinator is registered with BootstrapCoordinator, not Apply")
		}
	}
	return n.apply(ctx, env)
}

// BootstrapCoordinator applies the cluster's first AddCoordinator: env must be an AddCoordinator
// self-signed by the key it adds. Once a coordinator is registered, the state rejects further
// self-signed ones, and later coordinators are added with Apply, signed by a registered one.
func (n *Node) BootstrapCoordinator(ctx context.Context, env Envelope) (Result, error) {
	if env.Type != CmdAddCoordinator {
		return Result{}, errf(ErrInvalid, "BootstrapCoordinator takes add-coordinator, got %s", env.Type)
	}
	return n.apply(ctx, env)
}

func (n *Node) hasCoordinator() bool {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return len(n.fsm.state.coordinators) > 0
}

// apply stamps env with the leader's time and key and commits it through the group commit: alone
// when nothing is in flight, else with the commands that queued up meanwhile, in one entry.
func (n *Node) apply(ctx context.Context, env Envelope) (Result, error) {
	if n.raft.State() != raft.Leader {
		return Result{}, n.mapErr(raft.ErrNotLeader)
	}
	c := Command{Version: Version, Time: n.cfg.Now().UnixMilli(), Env: env, Leader: n.cfg.KeyID}
	return n.commits.submit(ctx, c)
}

// Barrier waits until every entry committed before the call is applied on this (leader) node, so
// that a following View reads the latest state.
func (n *Node) Barrier(ctx context.Context) error {
	f := n.raft.Barrier(n.timeout(ctx))
	return n.mapErr(wait(ctx, f.Error))
}

// View runs fn with read access to the local state (which on a follower may lag the leader; call
// Barrier on the leader first for a linearizable read). fn must not keep or modify the State.
func (n *Node) View(fn func(s *State) error) error {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return fn(n.fsm.state)
}

// Verify checks env's signature and issuer role against the local state without applying it
// (State.Verify): a cheap way to refuse forged commands before they reach the log.
func (n *Node) Verify(env Envelope) error {
	return n.View(func(s *State) error { return s.Verify(env) })
}

// Hash returns the local state's Hash and the index of the last applied log entry.
func (n *Node) Hash() ([32]byte, uint64) {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return n.fsm.state.Hash(), n.fsm.applied
}

// AppliedIndex returns the index of the last log entry applied to the local state.
func (n *Node) AppliedIndex() uint64 {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return n.fsm.applied
}

// Leader returns the current leader's ID and address, empty when unknown.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// State returns the raft role: "Follower", "Candidate", "Leader" or "Shutdown".
func (n *Node) State() string { return n.raft.State().String() }

// Stats returns raft's statistics (term, indexes, last contact, ...) and, as "command_entries"
// and "commands_applied", the ApplyCounts.
func (n *Node) Stats() map[string]string {
	st := n.raft.Stats()
	entries, cmds := n.ApplyCounts()
	st["command_entries"] = strconv.FormatUint(entries, 10)
	st["commands_applied"] = strconv.FormatUint(cmds, 10)
	return st
}

// ApplyCounts returns, since the node started, the command log entries it applied and the
// commands (envelopes) they carried; with group commit, entries grow more slowly than commands
// under load. Entries restored from a snapshot are not counted.
func (n *Node) ApplyCounts() (entries, commands uint64) {
	return n.fsm.entries.Load(), n.fsm.commands.Load()
}

// LeaderCh signals this node gaining (true) and losing (false) leadership.
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// WaitLeader waits until some leader is known and returns it.
func (n *Node) WaitLeader(ctx context.Context) (id, addr string, err error) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if id, addr = n.Leader(); id != "" {
			return id, addr, nil
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-t.C:
		}
	}
}

// AddVoter adds (or updates) a voter; call it on the leader. A non-voter with that ID becomes a
// voter.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.timeout(ctx))
	return n.mapErr(wait(ctx, f.Error))
}

// AddNonvoter adds (or updates the address of) a non-voter; call it on the leader. The server
// then receives the log and applies it like every replica, but does not count toward the quorum
// and never becomes leader. A voter with that ID is refused (ErrConfig) rather than demoted:
// taking a vote away is RemoveServer and a fresh AddNonvoter, a decision of its own.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	for _, sv := range servers {
		if sv.ID == id && sv.Suffrage == Voter {
			return errf(ErrConfig, "server %q is a voter: it cannot be added as a non-voter", id)
		}
	}
	f := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.timeout(ctx))
	return n.mapErr(wait(ctx, f.Error))
}

// RemoveServer removes a server (voter or non-voter) from the cluster; call it on the leader.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	f := n.raft.RemoveServer(raft.ServerID(id), 0, n.timeout(ctx))
	return n.mapErr(wait(ctx, f.Error))
}

// Servers returns the current cluster configuration: every voter and non-voter, each with its
// Suffrage (raft's staging servers, which this package never adds, are reported as non-voters).
func (n *Node) Servers() ([]Peer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, n.mapErr(err)
	}
	var out []Peer
	for _, s := range f.Configuration().Servers {
		sf := Nonvoter
		if s.Suffrage == raft.Voter {
			sf = Voter
		}
		out = append(out, Peer{ID: string(s.ID), Addr: string(s.Address), Suffrage: sf})
	}
	return out, nil
}

// Voter reports whether this node is a voter in its latest configuration (false while it is not
// in the configuration at all, e.g. before a leader added it).
func (n *Node) Voter() bool {
	servers, err := n.Servers()
	if err != nil {
		return false
	}
	for _, sv := range servers {
		if sv.ID == n.cfg.ID {
			return sv.Suffrage == Voter
		}
	}
	return false
}

// Snapshot takes a snapshot now (and compacts the log per TrailingLogs).
func (n *Node) Snapshot() error { return n.mapErr(n.raft.Snapshot().Error()) }

// Shutdown stops raft and closes the stores and the transport it created. It is safe to call
// more than once.
func (n *Node) Shutdown() error {
	err := n.raft.Shutdown().Error()
	n.closeAll()
	n.bolt = nil
	n.ownsTrans = false
	if err != nil {
		return n.mapErr(err)
	}
	return nil
}
