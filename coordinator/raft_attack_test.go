package coordinator

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/forge"
	"github.com/cohortlab/cohort/transport"
)

const attackTerm = forge.Term

// forgedRPCs are the two RPCs that took a plain-TCP cluster: an AppendEntries with a huge term
// (the leader steps down and follows "attacker") and an InstallSnapshot (it replaces the state).
func forgedRPCs(*testing.T) map[string][]byte {
	return map[string][]byte{"append-entries": forge.RaftAppendEntries(), "install-snapshot": forge.RaftInstallSnapshot()}
}

// sendRaw writes b on a fresh TCP connection to addr and reads what comes back for a moment.
func sendRaw(addr string, b []byte) (reply []byte, err error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	reply, err = io.ReadAll(bufio.NewReader(c))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = nil // the node keeps the connection open for more RPCs
	}
	return reply, err
}

func term(t *testing.T, n *consensus.Node) uint64 {
	v, err := strconv.ParseUint(n.Stats()["term"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// plainTCP is raft's own TCP stream layer (what consensus.Config.BindAddr alone gives) on a
// listener the test has bound: no TLS, no admission.
type plainTCP struct{ net.Listener }

func (plainTCP) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, timeout)
}

// The forged RPC is real: a node on plain TCP (what every coordinator ran before Raft was
// authenticated) takes the stranger's term and loses its leadership.
func TestForgedRaftRPCTakesPlainTCPNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	n, err := consensus.NewNode(consensus.Config{ID: "c1", InMemory: true, Stream: plainTCP{ln},
		Peers: []consensus.Peer{{ID: "c1", Addr: addr}}, HeartbeatTimeout: 150 * time.Millisecond,
		ElectionTimeout: 150 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	waitFor(t, 10*time.Second, "leader", n.IsLeader)
	if _, err := sendRaw(addr, forgedRPCs(t)["append-entries"]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the stranger's term taken", func() bool { return term(t, n) >= attackTerm })
}

// A coordinator cluster speaks Raft only over TLS between its own keys: the same forged RPCs,
// in plain TCP or over TLS with a key of the attacker's, never reach raft; the leader keeps its
// term and its leadership, and members are served throughout.
func TestForgedRaftRPCsCannotReachCoordinators(t *testing.T) {
	// Raft timeouts a loaded 2-core machine under -race keeps to: a leader that steps down
	// because its own heartbeats came late is not to be mistaken for the attack's doing.
	c := startClusterWith(t, 3, func(cfg *Config) {
		cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 600*time.Millisecond, 600*time.Millisecond, 500*time.Millisecond
	})
	ctx := context.Background()
	leader := -1
	for i, s := range c.servers {
		if s.Node().IsLeader() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	terms := make([]uint64, len(c.servers))
	for i, s := range c.servers {
		terms[i] = term(t, s.Node())
	}
	// The attacker's own TLS stream layer, admitting anyone on its side.
	attacker, err := transport.GenerateIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := transport.ListenStream("127.0.0.1:0", transport.StreamConfig{Identity: attacker, Allow: func(transport.NodeID) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A registered member's key does not open Raft either.
	member := newClient(t, c, "member-key")
	if err := member.EnsureRegistered(ctx, "member-key", nil); err != nil {
		t.Fatal(err)
	}
	memberLn, err := transport.ListenStream("127.0.0.1:0", transport.StreamConfig{Identity: testIdentity(t, "member-key"), Allow: func(transport.NodeID) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer memberLn.Close()

	for round := 0; round < 5; round++ { // repeated, as the attack that stopped all writes was
		for name, rpc := range forgedRPCs(t) {
			for _, addr := range c.addrs {
				if reply, err := sendRaw(addr, rpc); err == nil && len(reply) > 0 && reply[0] != 0x15 { // 0x15: a TLS alert
					t.Fatalf("plain-TCP %s to %s got a raft reply %x", name, addr, reply)
				}
				for who, l := range map[string]*transport.StreamListener{"stranger": ln, "member": memberLn} {
					conn, err := l.Dial(addr, 2*time.Second)
					if err == nil {
						// The handshake is refused; if our side finished first, the first read fails.
						conn.Write(rpc)
						conn.SetReadDeadline(time.Now().Add(time.Second))
						var b [1]byte
						if n, rerr := conn.Read(b[:]); n > 0 || rerr == nil {
							t.Fatalf("%s's TLS %s to %s was answered", who, name, addr)
						}
						conn.Close()
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, s := range c.servers {
		if got := term(t, s.Node()); got >= attackTerm || got != terms[i] {
			t.Fatalf("%s term %d after the attack, was %d", s.cfg.ID, got, terms[i])
		}
	}
	if !c.servers[leader].Node().IsLeader() {
		t.Fatalf("leader %s lost its leadership to the attack", c.servers[leader].cfg.ID)
	}
	// Honest members are still served: register, propose, read it back.
	alice := newClient(t, c, "alice")
	if err := alice.EnsureRegistered(ctx, "alice", []string{"alice-data"}); err != nil {
		t.Fatal(err)
	}
	operate(t, c.addrs, 10, alice)
	if _, err := alice.Submit(ctx, &consensus.ProposeBody{Name: "after-attack", Model: "mlp:784-32-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 10, Rounds: 2}, RewardPool: 10, MinMembers: 1, QuorumBP: 5000, ThresholdBP: 5000,
		VotingPeriodMs: 60_000}); err != nil {
		t.Fatal(err)
	}
	hashes := map[string]bool{}
	waitFor(t, 10*time.Second, "replicas agree", func() bool {
		clear(hashes)
		for _, s := range c.servers {
			hashes[s.Status().StateHash] = true
		}
		return len(hashes) == 1
	})
}
