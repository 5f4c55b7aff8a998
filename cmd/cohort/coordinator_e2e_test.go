package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/forge"
	"github.com/cohortlab/cohort/internal/netutil"
	"github.com/cohortlab/cohort/protocol"
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

// A host is where a test runs a process: the test's own network stack (ns "") or a Linux network
// namespace of its own (TestCohortAcrossHosts), entered with `ip netns exec`.
type host struct {
	ns string // the network namespace; "" for the test's own stack
	ip string // the host's address in it (ns != "" only)
}

// command is `bin args...` run on h.
func (h host) command(bin string, args ...string) *exec.Cmd {
	if h.ns == "" {
		return exec.Command(bin, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
}

// hostCoordinatorPort is the port a coordinator on a host of its own listens at: nothing else
// binds in that network namespace.
const hostCoordinatorPort = "7000"

type proc struct {
	id, addr, dir string
	host          host            // where the node runs
	socks         netutil.Sockets // on the test's own stack: bound by the test for the node's life, restarts included
	refusing      chan struct{}   // while the node is down (kill): closed when refuse stops
	cmd           *exec.Cmd
	log           *os.File
	key           string // node key ID
}

type procCluster struct {
	t     *testing.T
	bin   string
	peers string
	procs []*proc
	args  []string // more arguments of every node's `cohort coordinator`
}

// newProc binds a coordinator process's sockets (TCP and UDP at one 127.0.0.1 port). The test
// holds them until it ends and hands them to every process it starts for that node: the port
// is never released, so a restarted node comes back on it and nothing else can take it.
func newProc(t *testing.T, id, dir string) *proc {
	t.Helper()
	s, err := netutil.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &proc{id: id, addr: s.Addr(), dir: dir, socks: s}
}

// command is `cohort coordinator` for p with args, inheriting p's sockets as fds 3 (UDP) and 4 (TCP);
// on a host of its own the node binds its address itself.
func (p *proc) command(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	if p.host.ns != "" {
		return p.host.command(bin, append([]string{"--log-level", "debug", "coordinator", "--id", p.id, "--dir", p.dir,
			"--listen", p.addr}, args...)...)
	}
	udp, err := p.socks.UDP.File()
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := p.socks.TCP.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--log-level", "debug", "coordinator", "--id", p.id, "--dir", p.dir,
		"--listen", p.addr, "--listen-fds", "3,4"}, args...)...)
	cmd.ExtraFiles = []*os.File{udp, tcp}
	return cmd
}

// startCmd starts cmd and closes the test's copies of the descriptors it inherited.
func startCmd(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	err := cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func startProcCluster(t *testing.T, n int, args ...string) *procCluster {
	return startProcClusterOn(t, make([]host, n), args...)
}

// startProcClusterOn starts one coordinator on each of hosts: on the test's own stack (host{})
// at a port the test holds, on a host of its own at its IP and hostCoordinatorPort.
func startProcClusterOn(t *testing.T, hosts []host, args ...string) *procCluster {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	pc := &procCluster{t: t, bin: bin, args: args}
	var peers []string
	root := t.TempDir()
	for i, h := range hosts {
		id := fmt.Sprintf("c%d", i+1)
		var p *proc
		if h.ns == "" {
			p = newProc(t, id, filepath.Join(root, id))
		} else {
			p = &proc{id: id, addr: net.JoinHostPort(h.ip, hostCoordinatorPort), dir: filepath.Join(root, id), host: h}
		}
		// The operators make their node keys first and share the voter list with the key IDs.
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "keygen", "--out", filepath.Join(p.dir, "node.key")).CombinedOutput()
		if err != nil {
			t.Fatalf("keygen: %v\n%s", err, out)
		}
		_, key, ok := strings.Cut(strings.TrimSpace(string(out)), "\nid ")
		if !ok {
			t.Fatalf("keygen printed %q, want a line \"id KEYID\"", out)
		}
		p.key = key
		peers = append(peers, p.id+"="+key+"@"+p.addr)
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
	p.unrefuse()
	p.cmd = p.command(pc.t, pc.bin, append([]string{"--peers", pc.peers, "--heartbeat-timeout", "300ms", "--election-timeout", "300ms",
		"--snapshot-threshold", "40", "--trailing-logs", "10", "--snapshot-interval", "200ms"}, pc.args...)...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	startCmd(pc.t, p.cmd)
}

// kill SIGKILLs p's process. Its sockets stay bound — the test holds them for the node's next
// process — but refuse as a dead process's port does: the test resets every Raft connection
// (refuse) until start hands the sockets to a new process.
func (pc *procCluster) kill(p *proc) {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	p.refuse()
}

// refuse resets every TCP connection made to p's held listener until unrefuse.
func (p *proc) refuse() {
	if p.socks.TCP == nil {
		return // a host of its own: the dead process's port refuses by itself
	}
	// Starting a child put the shared socket in blocking mode (os.File.Fd), and a child that died
	// before taking it over left it so: a blocking accept would not see unrefuse's deadline.
	if rc, err := p.socks.TCP.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), true) })
	}
	done := make(chan struct{})
	p.refusing = done
	go func() {
		defer close(done)
		for {
			c, err := p.socks.TCP.Accept()
			if err != nil {
				return // the deadline unrefuse sets, or the sockets closed at the test's end
			}
			c.(*net.TCPConn).SetLinger(0) // a reset, at once
			c.Close()
		}
	}()
}

// unrefuse stops refuse, leaving connections made since to the next process.
func (p *proc) unrefuse() {
	if p.refusing == nil {
		return
	}
	p.socks.TCP.SetDeadline(time.Now())
	<-p.refusing
	p.socks.TCP.SetDeadline(time.Time{})
	p.refusing = nil
}

func (pc *procCluster) addrs() []string {
	var a []string
	for _, p := range pc.procs {
		a = append(a, p.addr)
	}
	return a
}

func memberClient(t *testing.T, addrs []string, name string) *client.Client {
	seed := sha256.Sum256([]byte(name))
	id, err := transport.NewIdentity(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(client.Config{Addrs: addrs, Identity: id, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// operator runs an operator command of the CLI (fund, grant) as a majority of the operators do:
// signed with the node keys of the first coordinators, one after the other (each on its
// coordinator's host), each retried while its key is not registered yet. It returns what the
// last signature printed.
func (pc *procCluster) operator(t *testing.T, args ...string) string {
	t.Helper()
	var out []byte
	for i := 0; i < len(pc.procs)/2+1; i++ {
		full := append([]string{args[0], "--coordinator", strings.Join(pc.addrs(), ","), "--key", pc.nodeKey(i)}, args[1:]...)
		eventually(t, 20*time.Second, "cohort "+strings.Join(args, " "), func() error {
			var err error
			if out, err = pc.procs[i].host.command(pc.bin, full...).CombinedOutput(); err != nil && !strings.Contains(string(out), "already issued") {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}
	return string(out)
}

// nodeKey is the node key file of coordinator i.
func (pc *procCluster) nodeKey(i int) string { return filepath.Join(pc.procs[i].dir, "node.key") }

func statusOf(cl *client.Client, addr string) (*protocol.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := cl.QueryAt(ctx, addr, protocol.Query{What: protocol.QueryStatus})
	if err != nil {
		return nil, err
	}
	return r.Status, nil
}

func (pc *procCluster) leader(cl *client.Client) *proc {
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
	for i := 0; i < 2; i++ { // two of the three operators
		id, err := transport.LoadKey(pc.nodeKey(i))
		if err != nil {
			t.Fatal(err)
		}
		op, err := client.Dial(client.Config{Addrs: pc.addrs(), Identity: id, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		res, err := op.Submit(ctx, &consensus.SetLimitsBody{Limits: consensus.Limits{MaxOpenProposals: 1000, MaxOpenProposalsPerMember: 1000}})
		op.Close()
		if err != nil || (res.Status == "pending") != (i == 0) {
			t.Fatalf("set-limits signed by c%d: %+v, %v", i+1, res, err)
		}
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
			Params: consensus.Hyperparams{InnerSteps: 1, Rounds: 1}, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 3_600_000})
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
		r, err := cl.QueryAt(ctx, p.addr, protocol.Query{What: protocol.QueryProposals})
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

// TestCoordinatorProcessesRefuseStrangers attacks three `cohort coordinator` processes the way an
// outsider would: forged Raft RPCs (a term of 10^6, a snapshot) on each Raft port, repeatedly,
// and a fourth process with a key nobody approved asking to join. The terms, the leader and the
// voters stay as they were, and a member is served throughout.
func TestCoordinatorProcessesRefuseStrangers(t *testing.T) {
	pc := startProcCluster(t, 3)
	cl := memberClient(t, pc.addrs(), "alice")
	ctx := context.Background()
	eventually(t, 20*time.Second, "cluster up", func() error { return cl.EnsureRegistered(ctx, "alice", []string{"alice"}) })
	// Every node registers its key in the background once it knows the leader: wait for all three.
	eventually(t, 20*time.Second, "every coordinator registered", func() error {
		st, err := statusOf(cl, pc.procs[0].addr)
		if err != nil {
			return err
		}
		if len(st.Coordinators) != 3 {
			return fmt.Errorf("%d of 3 coordinators registered", len(st.Coordinators))
		}
		return nil
	})
	// cohort status --all asks every pinned address given, each about itself.
	var pinned []string
	for _, p := range pc.procs {
		pinned = append(pinned, p.key+"@"+p.addr)
	}
	out, err := exec.Command(pc.bin, "status", "--all", "--json", "--coordinator", strings.Join(pinned, ",")).CombinedOutput()
	if err != nil || strings.Contains(string(out), "unreachable") {
		t.Fatalf("cohort status --all with pinned addresses: %v\n%s", err, out)
	}
	for _, p := range pc.procs {
		if !strings.Contains(string(out), `"id": "`+p.id+`"`) && !strings.Contains(string(out), `"id":"`+p.id+`"`) {
			t.Fatalf("cohort status --all does not show %s:\n%s", p.id, out)
		}
	}
	leader := pc.leader(cl)
	if leader == nil {
		t.Fatal("no leader")
	}
	before := map[string]string{}
	for _, p := range pc.procs {
		st, err := statusOf(cl, p.addr)
		if err != nil {
			t.Fatal(err)
		}
		before[p.id] = st.Term
	}
	for i := 0; i < 10; i++ {
		for _, p := range pc.procs {
			for _, rpc := range [][]byte{forge.RaftAppendEntries(), forge.RaftInstallSnapshot()} {
				if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
					c.Write(rpc)
					c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					var b [64]byte
					if n, _ := c.Read(b[:]); n > 0 && b[0] != 0x15 { // 0x15: a TLS alert
						t.Fatalf("%s answered a forged Raft RPC: %x", p.id, b[:n])
					}
					c.Close()
				}
			}
		}
	}
	// A node whose key no operator approved starts with --join and gets nowhere.
	mallory := newProc(t, "c4", filepath.Join(t.TempDir(), "c4"))
	if err := os.MkdirAll(mallory.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mallory.dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	mallory.log = f
	mallory.cmd = mallory.command(t, pc.bin, "--join", pc.procs[0].key+"@"+pc.procs[0].addr)
	mallory.cmd.Stdout, mallory.cmd.Stderr = f, f
	startCmd(t, mallory.cmd)
	defer pc.kill(mallory)
	eventually(t, 20*time.Second, "the unapproved node refused", func() error {
		b, _ := os.ReadFile(f.Name())
		if !strings.Contains(string(b), "not approved") {
			return fmt.Errorf("no refusal in its log yet")
		}
		return nil
	})
	// The member is served; nothing moved.
	if _, err := cl.Submit(ctx, &consensus.VoteBody{Proposal: 99, Yes: true}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("a member's request after the attack: %v, want the state's own answer", err)
	}
	for _, p := range pc.procs {
		st, err := statusOf(cl, p.addr)
		if err != nil {
			t.Fatal(err)
		}
		if st.Term != before[p.id] || len(st.Servers) != 3 || len(st.Coordinators) != 3 {
			t.Fatalf("%s after the attack: term %s (was %s), %d voters, %d coordinators", p.id, st.Term, before[p.id], len(st.Servers), len(st.Coordinators))
		}
		if p == leader && st.Role != "Leader" {
			t.Fatalf("leader %s lost its leadership", p.id)
		}
	}
}
