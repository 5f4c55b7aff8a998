package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator"
	"github.com/cohortlab/cohort/internal/netutil"
	"github.com/cohortlab/cohort/transport"
)

// buildBinary builds cmd/cohort once per test binary.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "cohort-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cohort")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

type proc struct {
	id, addr, dir string
	cmd           *exec.Cmd
	log           *os.File
}

type procCluster struct {
	t     *testing.T
	bin   string
	peers string
	procs []*proc
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := netutil.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func startProcCluster(t *testing.T, n int) *procCluster {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	pc := &procCluster{t: t, bin: bin}
	var peers []string
	root := t.TempDir()
	for i := 0; i < n; i++ {
		p := &proc{id: fmt.Sprintf("c%d", i+1), addr: freeAddr(t)}
		p.dir = filepath.Join(root, p.id)
		peers = append(peers, p.id+"="+p.addr)
		pc.procs = append(pc.procs, p)
	}
	pc.peers = strings.Join(peers, ",")
	for _, p := range pc.procs {
		pc.start(p)
	}
	t.Cleanup(func() {
		for _, p := range pc.procs {
			if p.cmd != nil && p.cmd.ProcessState == nil {
				p.cmd.Process.Kill()
				p.cmd.Wait()
			}
			if t.Failed() && p.log != nil {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("log of %s:\n%s", p.id, tail(string(b), 3000))
			}
		}
	})
	return pc
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (pc *procCluster) start(p *proc) {
	pc.t.Helper()
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		pc.t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(p.dir, "stderr.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		pc.t.Fatal(err)
	}
	p.log = f
	p.cmd = exec.Command(pc.bin, "--log-level", "debug", "coordinator", "--id", p.id, "--dir", p.dir, "--listen", p.addr,
		"--peers", pc.peers, "--heartbeat-timeout", "300ms", "--election-timeout", "300ms",
		"--snapshot-threshold", "40", "--trailing-logs", "10", "--snapshot-interval", "200ms")
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		pc.t.Fatal(err)
	}
}

func (pc *procCluster) kill(p *proc) {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func (pc *procCluster) addrs() []string {
	var a []string
	for _, p := range pc.procs {
		a = append(a, p.addr)
	}
	return a
}

func memberClient(t *testing.T, addrs []string, name string) *coordinator.Client {
	seed := sha256.Sum256([]byte(name))
	id, err := transport.NewIdentity(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := coordinator.Dial(coordinator.ClientConfig{Addrs: addrs, Identity: id, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// operator runs an operator command of the CLI (fund, grant) signed with the first coordinator's
// node key, retrying while that key is not registered yet; only use it for commands that may be
// applied twice (a grant sets the weight) or after the key is known to be registered.
func (pc *procCluster) operator(t *testing.T, args ...string) string {
	t.Helper()
	full := append([]string{args[0], "--coordinator", strings.Join(pc.addrs(), ","), "--key", pc.nodeKey()}, args[1:]...)
	var out []byte
	eventually(t, 20*time.Second, "cohort "+strings.Join(args, " "), func() error {
		var err error
		if out, err = exec.Command(pc.bin, full...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return string(out)
}

// nodeKey is the node key file of the first coordinator.
func (pc *procCluster) nodeKey() string { return filepath.Join(pc.procs[0].dir, "node.key") }

func statusOf(cl *coordinator.Client, addr string) (*coordinator.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := cl.QueryAt(ctx, addr, coordinator.Query{What: coordinator.QueryStatus})
	if err != nil {
		return nil, err
	}
	return r.Status, nil
}

func (pc *procCluster) leader(cl *coordinator.Client) *proc {
	for _, p := range pc.procs {
		if st, err := statusOf(cl, p.addr); err == nil && st.Role == "Leader" {
			return p
		}
	}
	return nil
}

func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCoordinatorProcessesSurviveLeaderKill runs three `cohort coordinator` processes with on-disk
// stores; a member keeps proposing and voting while the leader is killed with SIGKILL. Every
// acknowledged write must be present exactly once on every node, the restarted node catches up
// (the log is compacted meanwhile, so it needs a snapshot install), and all state hashes agree.
func TestCoordinatorProcessesSurviveLeaderKill(t *testing.T) {
	writes := 120
	if testing.Short() {
		writes = 60
	}
	pc := startProcCluster(t, 3)
	cl := memberClient(t, pc.addrs(), "alice")
	ctx := context.Background()
	eventually(t, 20*time.Second, "cluster up", func() error {
		return cl.EnsureRegistered(ctx, "alice", []string{"alice"})
	})
	// The operators grant alice a vote and let one member keep many proposals open.
	pc.operator(t, "grant", "--member", cl.ID(), "--votes", "1")
	id, err := transport.LoadKey(pc.nodeKey())
	if err != nil {
		t.Fatal(err)
	}
	op, err := coordinator.Dial(coordinator.ClientConfig{Addrs: pc.addrs(), Identity: id, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if _, err := op.Submit(ctx, &consensus.SetLimitsBody{Limits: consensus.Limits{MaxOpenProposals: 1000, MaxOpenProposalsPerMember: 1000}}); err != nil {
		t.Fatal(err)
	}
	acked := map[string]uint64{} // proposal name → ID
	var killed *proc
	for i := 0; i < writes; i++ {
		if i == writes/3 {
			killed = pc.leader(cl)
			if killed == nil {
				t.Fatal("no leader to kill")
			}
			pc.kill(killed)
		}
		name := fmt.Sprintf("p%03d", i)
		res, err := cl.Submit(ctx, &consensus.ProposeBody{Name: name, Model: "mlp", Dataset: "fashion-mnist",
			Params: consensus.Hyperparams{Rounds: 1, InnerSteps: 1}, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 3_600_000})
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		acked[name] = res.ID
		if _, err := cl.Submit(ctx, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
			t.Fatalf("vote %d: %v", i, err)
		}
	}
	// The killed node restarts from its directory and catches up.
	pc.start(killed)
	var hash string
	eventually(t, 30*time.Second, "all nodes at the same state", func() error {
		var hashes []string
		for _, p := range pc.procs {
			st, err := statusOf(cl, p.addr)
			if err != nil {
				return fmt.Errorf("%s: %w", p.id, err)
			}
			hashes = append(hashes, fmt.Sprintf("%s@%d", st.StateHash, st.AppliedIndex))
		}
		for _, h := range hashes[1:] {
			if h != hashes[0] {
				return fmt.Errorf("state differs: %v", hashes)
			}
		}
		hash = hashes[0]
		return nil
	})
	// The log was compacted while the node was down (trailing logs 10): it caught up by snapshot.
	if b, _ := os.ReadFile(killed.log.Name()); !strings.Contains(string(b), "Installed remote snapshot") {
		t.Errorf("restarted %s did not install a snapshot from the leader", killed.id)
	}
	for _, p := range pc.procs {
		r, err := cl.QueryAt(ctx, p.addr, coordinator.Query{What: coordinator.QueryProposals})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, pr := range r.Proposals {
			seen[pr.Name]++
			if id, ok := acked[pr.Name]; ok && id != pr.ID {
				t.Errorf("%s: proposal %s has ID %d, acknowledged as %d", p.id, pr.Name, pr.ID, id)
			}
			if len(pr.Votes) != 1 {
				t.Errorf("%s: proposal %s has %d votes, want exactly 1", p.id, pr.Name, len(pr.Votes))
			}
		}
		for name := range acked {
			if seen[name] != 1 {
				t.Errorf("%s: acknowledged proposal %s present %d times", p.id, name, seen[name])
			}
		}
		if len(seen) != len(acked) {
			t.Errorf("%s: %d proposals, %d acknowledged", p.id, len(seen), len(acked))
		}
	}
	t.Logf("killed %s; %d writes acknowledged; final state %s", killed.id, len(acked), hash)
}
