package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/protocol"
)

// TestCohortAcrossHosts runs a cohort across hosts with network stacks of their own: three
// `cohort coordinator` and three `cohort join` processes, each in a Linux network namespace of
// its own, joined by veth pairs to one bridge (in a namespace of its own too) on 10.77.0.0/24.
// Each peer's link is shaped in both directions: 10 Mbit/s (tc tbf), 25 ms of delay each way
// where the kernel has sch_netem, and 1 % packet loss each way (nftables on the bridge) where
// `nft` is installed; the test logs what it applied. The coordinators' links are not shaped.
//
// The cohort completes on one model on every peer and the coordinators' record, every round is
// scored and the pool paid (`cohort report`), the three coordinators end at one state hash
// (`cohort status --all`), and the traffic crossed the veths: a peer's host reaches no
// coordinator at 127.0.0.1, and every peer's link carried the model both ways.
//
// It needs root and iproute2 (`ip`, `tc`), and skips without them.
func TestCohortAcrossHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("a cohort of processes in network namespaces; run without -short as root (make e2e)")
	}
	requireNetns(t)
	began := time.Now()
	tn := newTestNet(t, "c1", "c2", "c3", "p1", "p2", "p3")
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	peerHosts := []string{"p1", "p2", "p3"}
	for _, a := range tn.shape(peerHosts, "10mbit", 25*time.Millisecond, 1) {
		t.Logf("shaping: %s", a)
	}
	pc := startProcClusterOn(t, []host{tn.hosts["c1"], tn.hosts["c2"], tn.hosts["c3"]})
	addrs := strings.Join(pc.addrs(), ",")
	dir := t.TempDir()
	// run runs the CLI on a host (a name of tn, or "" for the test's own stack: no network).
	run := func(on string, args ...string) (string, error) {
		out, err := tn.hosts[on].command(bin, args...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("cohort %s on %q: %w\n%s", strings.Join(args, " "), on, err, out)
		}
		return string(out), nil
	}
	must := func(on string, args ...string) string {
		t.Helper()
		out, err := run(on, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	names := []string{"alice", "bob", "carol"}
	must("", "shard", "--out", filepath.Join(dir, "shards"), "--peers", fmt.Sprint(len(names)), "--partition", "iid", "--seed", "3")
	keys := map[string]string{}
	var proposerID string
	for _, n := range append([]string{"proposer"}, names...) {
		keys[n] = filepath.Join(dir, n+".key")
		out := must("", "keygen", "--out", keys[n])
		if n == "proposer" {
			if _, proposerID, _ = strings.Cut(strings.TrimSpace(out), "\nid "); proposerID == "" {
				t.Fatalf("keygen printed %q, want a line \"id KEYID\"", out)
			}
		}
	}

	// The proposer works from the first peer's host, across its shaped link.
	eventually(t, 30*time.Second, "proposer registered", func() error {
		_, err := run("p1", "register", "--coordinator", addrs, "--key", keys["proposer"], "--timeout", "5s")
		return err
	})
	if out := pc.operator(t, "grant", "--member", proposerID, "--votes", "1"); !strings.Contains(out, "granted 1 votes") {
		t.Fatalf("grant: %s", out)
	}
	const pool, rounds = 900, 6
	if out := pc.operator(t, "fund", "--amount", fmt.Sprint(pool)); !strings.Contains(out, fmt.Sprintf("the treasury holds %d", pool)) {
		t.Fatalf("fund: %s", out)
	}
	must("p1", "propose", "--coordinator", addrs, "--key", keys["proposer"], "--name", "across-hosts", "--model", "mlp:784-32-10",
		"--rounds", fmt.Sprint(rounds), "--inner-steps", "30", "--reward-pool", fmt.Sprint(pool), "--min-members", fmt.Sprint(len(names)),
		"--quorum", "0.2", "--voting-period", "1s")
	must("p1", "vote", "--coordinator", addrs, "--key", keys["proposer"], "--proposal", "1", "--yes")
	eventually(t, 30*time.Second, "cohort formed", func() error {
		out, err := run("p1", "proposals", "--coordinator", addrs, "--json", "--timeout", "5s")
		if err != nil {
			return err
		}
		var ps []struct {
			Cohort uint64 `json:"cohort"`
		}
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			return fmt.Errorf("proposals --json: %w", err)
		}
		if len(ps) != 1 || ps[0].Cohort != 1 {
			return fmt.Errorf("not yet: %s", out)
		}
		return nil
	})

	// The traffic crosses the veths: a peer's host has no coordinator at 127.0.0.1.
	if out, err := run("p2", "status", "--coordinator", "127.0.0.1:"+hostCoordinatorPort, "--timeout", "2s"); err == nil {
		t.Fatalf("a peer's host reached a coordinator at 127.0.0.1: %s", out)
	}

	type joiner struct {
		out  string
		done chan error // the process's exit, once
	}
	var joiners []joiner
	for i, n := range names {
		out := filepath.Join(dir, n+".out")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		cmd := tn.hosts[peerHosts[i]].command(bin, "join", "--coordinator", addrs, "--cohort", "1", "--key", keys[n],
			"--data", filepath.Join(dir, "shards", fmt.Sprintf("peer-%d", i+1)), "--contributor", n, "--batch", "32")
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
			if t.Failed() {
				b, _ := os.ReadFile(out)
				t.Logf("output of %s:\n%s", n, tail(string(b), 3000))
			}
		})
		joiners = append(joiners, joiner{out, done})
	}
	final := regexp.MustCompile(`cohort 1 done: .* final model ([0-9a-f]+)`)
	var hashes []string
	timeout := time.After(2 * time.Minute)
	for i, j := range joiners {
		select {
		case err := <-j.done:
			j.done <- err // for the cleanup
			b, _ := os.ReadFile(j.out)
			if err != nil {
				t.Fatalf("%s: %v\n%s", names[i], err, tail(string(b), 3000))
			}
			m := final.FindStringSubmatch(string(b))
			if m == nil || !strings.Contains(string(b), "joined cohort 1") {
				t.Fatalf("%s printed no final model:\n%s", names[i], tail(string(b), 3000))
			}
			hashes = append(hashes, m[1])
		case <-timeout:
			t.Fatalf("%s did not finish in 2 minutes", names[i])
		}
	}
	for _, h := range hashes[1:] {
		if h != hashes[0] {
			t.Fatalf("peers ended on different models: %v", hashes)
		}
	}

	// Every round is scored and the pool paid out to every contributor.
	var rep report.Report
	eventually(t, 60*time.Second, "rounds scored and paid", func() error {
		out, err := run("p3", "report", "--coordinator", addrs, "--cohort", "1", "--format", "json", "--timeout", "5s")
		if err != nil {
			return err
		}
		rep = report.Report{}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if rep.Status != string(consensus.CohortDone) || rep.Totals.RoundsScored != rounds || rep.Totals.Paid == 0 {
			return fmt.Errorf("status %s, %d of %d rounds scored, %d paid", rep.Status, rep.Totals.RoundsScored, rounds, rep.Totals.Paid)
		}
		return nil
	})
	if len(rep.Rounds) != rounds {
		t.Fatalf("report has %d rounds, want %d", len(rep.Rounds), rounds)
	}
	var by []string
	for _, r := range rep.Rounds {
		if !r.Scored || r.Receipts != len(names) {
			t.Errorf("round %d: scored %v, %d receipts (want %d): %s", r.Number, r.Scored, r.Receipts, len(names), r.Note)
		}
		acc := "-"
		if r.ValAccuracy != nil {
			acc = fmt.Sprintf("%.1f %%", 100**r.ValAccuracy)
		}
		by = append(by, fmt.Sprintf("round %d: %s, paid %d", r.Number, acc, r.Paid))
	}
	t.Logf("%s; %d of %d paid", strings.Join(by, "; "), rep.Totals.Paid, rep.Totals.Pool)
	if len(rep.Contributors) != len(names) {
		t.Errorf("%d contributors, want %d", len(rep.Contributors), len(names))
	}
	for _, c := range rep.Contributors {
		if c.Samples == 0 || c.Payout == 0 {
			t.Errorf("contributor %s: %d samples, paid %d", c.Name, c.Samples, c.Payout)
		}
	}

	// The coordinators agree: one state hash at one applied index, the cohort recorded done on
	// the model every peer holds. Each is asked at its pinned address, from a peer's host.
	var pinned []string
	for _, p := range pc.procs {
		pinned = append(pinned, p.key+"@"+p.addr)
	}
	eventually(t, 30*time.Second, "coordinators at one state", func() error {
		out, err := run("p3", "status", "--all", "--json", "--coordinator", strings.Join(pinned, ","), "--timeout", "5s")
		if err != nil {
			return err
		}
		var sts []protocol.Status
		if err := json.Unmarshal([]byte(out), &sts); err != nil {
			return fmt.Errorf("status --all: %w", err)
		}
		if len(sts) != len(pc.procs) {
			return fmt.Errorf("%d statuses, want %d", len(sts), len(pc.procs))
		}
		for _, st := range sts {
			if st.StateHash == "" || st.StateHash != sts[0].StateHash || st.AppliedIndex != sts[0].AppliedIndex {
				return fmt.Errorf("%s at %s: state %s@%d, %s at %s@%d", st.ID, st.Addr, st.StateHash, st.AppliedIndex, sts[0].ID, sts[0].StateHash, sts[0].AppliedIndex)
			}
		}
		return nil
	})

	// Every peer's link carried the cohort both ways, and the updates the peers reported sending
	// (their receipts) crossed the veths.
	var sent uint64
	for _, h := range peerHosts {
		rx, tx, err := tn.linkBytes(h)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%s): received %d bytes, sent %d over its veth", h, tn.hosts[h].ip, rx, tx)
		if rx == 0 || tx == 0 {
			t.Errorf("%s: received %d bytes, sent %d over its veth", h, rx, tx)
		}
		sent += tx
	}
	if sent < rep.Totals.BytesSent {
		t.Errorf("the peers' veths sent %d bytes, less than the %d their receipts report", sent, rep.Totals.BytesSent)
	}
	if drops := tn.lossCounters(); drops != "" {
		t.Logf("packets dropped by the loss rules: %s", drops)
	}
	t.Logf("the run took %s (hosts, coordinators, cohort and checks); %d update bytes in receipts; final model %s",
		time.Since(began).Round(100*time.Millisecond), rep.Totals.BytesSent, hashes[0])
}

// requireNetns skips t unless it can build hosts of its own: root, `ip` and `tc`.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run as root (make e2e)")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s (iproute2) not found: %v", tool, err)
		}
	}
}

// netnsPrefix starts the name of every namespace a testNet makes; the process ID follows, so a
// later run can tell a dead run's namespaces from a live one's.
const netnsPrefix = "cohort-e2e-"

// A testNet is a set of hosts, each a network namespace with one veth (eth0) to a bridge that
// lives in a namespace of its own (the switch). Nothing of it is in the test's own stack.
type testNet struct {
	t      *testing.T
	run    string          // the namespaces' names start with it
	sw     string          // the switch's namespace
	hosts  map[string]host // by name; "" is the test's own stack
	shaped []string        // hosts whose links have loss rules
}

// newTestNet makes one host for each of names, at 10.77.0.11, .12, …, and removes it all when
// the test ends. It skips the test when no namespace can be made.
func newTestNet(t *testing.T, names ...string) *testNet {
	t.Helper()
	removeStaleNetns(t)
	var b [3]byte
	rand.Read(b[:])
	tn := &testNet{t: t, run: fmt.Sprintf("%s%d-%s", netnsPrefix, os.Getpid(), hex.EncodeToString(b[:])), hosts: map[string]host{"": {}}}
	tn.sw = tn.run + "-sw"
	if err := tn.addNetns(tn.sw); err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	tn.must("ip", "-n", tn.sw, "link", "set", "dev", "lo", "up")
	tn.must("ip", "-n", tn.sw, "link", "add", "name", "br0", "type", "bridge")
	tn.must("ip", "-n", tn.sw, "link", "set", "dev", "br0", "up")
	for i, name := range names {
		ns := tn.run + "-" + name
		if err := tn.addNetns(ns); err != nil {
			t.Fatal(err)
		}
		h := host{ns: ns, ip: fmt.Sprintf("10.77.0.%d", 11+i)}
		// The switch's end is named after the host; the host's end is eth0.
		tn.must("ip", "-n", tn.sw, "link", "add", "name", name, "type", "veth", "peer", "name", "eth0", "netns", ns)
		tn.must("ip", "-n", tn.sw, "link", "set", "dev", name, "master", "br0", "up")
		tn.must("ip", "-n", ns, "link", "set", "dev", "lo", "up")
		tn.must("ip", "-n", ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		tn.must("ip", "-n", ns, "link", "set", "dev", "eth0", "up")
		tn.hosts[name] = h
	}
	return tn
}

// addNetns makes a namespace and removes it when the test ends (after the processes in it,
// whose cleanups were registered later and run first).
func (tn *testNet) addNetns(ns string) error {
	if err := runTool("ip", "netns", "add", ns); err != nil {
		return err
	}
	tn.t.Cleanup(func() {
		if err := runTool("ip", "netns", "del", ns); err != nil {
			tn.t.Errorf("cleanup: %v", err)
		}
	})
	return nil
}

// removeStaleNetns deletes the namespaces of earlier runs whose process is gone (killed before
// its cleanups ran).
func removeStaleNetns(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // not ours, or its run is alive
		}
		if err := runTool("ip", "netns", "del", name); err == nil {
			t.Logf("removed namespace %s of a dead run", name)
		}
	}
}

// errTool wraps a failed tool run.
var errTool = errors.New("tool failed")

// runTool runs a network tool, its output in the error.
func runTool(name string, args ...string) error {
	return runToolIn(nil, name, args...)
}

// runToolIn is runTool with stdin (nil: none).
func runToolIn(stdin []byte, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w: %s", errTool, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (tn *testNet) must(name string, args ...string) {
	tn.t.Helper()
	if err := runTool(name, args...); err != nil {
		tn.t.Fatal(err)
	}
}

// shape limits each of hosts' links to rate in both directions (tbf on the host's eth0 and on
// the switch's end), adds delay each way where the kernel has sch_netem, and drops lossPct % of
// the IPv4 packets each way on the bridge where nft is installed. It returns what it applied and
// what it left out, one line each.
func (tn *testNet) shape(hosts []string, rate string, delay time.Duration, lossPct int) []string {
	tn.t.Helper()
	var applied []string
	// Each direction: the device whose egress it is, in its namespace.
	type end struct{ ns, dev string }
	var ends []end
	for _, h := range hosts {
		ends = append(ends, end{tn.hosts[h].ns, "eth0"}, end{tn.sw, h})
	}
	for _, e := range ends {
		tn.must("tc", "-n", e.ns, "qdisc", "add", "dev", e.dev, "root", "handle", "1:", "tbf", "rate", rate, "burst", "32kb", "latency", "100ms")
	}
	applied = append(applied, fmt.Sprintf("rate %s each way (tc tbf) on %s", rate, strings.Join(hosts, ", ")))
	// sch_netem may be missing (a kernel without CONFIG_NET_SCH_NETEM): the first try tells.
	ms := fmt.Sprintf("%dms", delay.Milliseconds())
	if err := runTool("tc", "-n", ends[0].ns, "qdisc", "add", "dev", ends[0].dev, "parent", "1:1", "handle", "10:", "netem", "delay", ms); err != nil {
		applied = append(applied, fmt.Sprintf("no delay: this kernel has no sch_netem (%v)", err))
	} else {
		for _, e := range ends[1:] {
			tn.must("tc", "-n", e.ns, "qdisc", "add", "dev", e.dev, "parent", "1:1", "handle", "10:", "netem", "delay", ms)
		}
		applied = append(applied, fmt.Sprintf("delay %s each way (tc netem)", ms))
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return append(applied, "no loss: nft (nftables) is not installed")
	}
	var rules strings.Builder
	fmt.Fprintf(&rules, "table bridge cohort_loss {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n")
	for _, h := range hosts {
		for _, dir := range []string{"iifname", "oifname"} {
			fmt.Fprintf(&rules, "\t\t%s %q ether type ip numgen random mod 100 < %d counter drop\n", dir, h, lossPct)
		}
	}
	rules.WriteString("\t}\n}\n")
	if err := runToolIn([]byte(rules.String()), "ip", "netns", "exec", tn.sw, "nft", "-f", "-"); err != nil {
		return append(applied, fmt.Sprintf("no loss: %v", err))
	}
	tn.shaped = hosts
	return append(applied, fmt.Sprintf("loss %d %% each way (nftables numgen on the bridge)", lossPct))
}

// lossCounters is what the loss rules dropped ("" without them).
func (tn *testNet) lossCounters() string {
	if len(tn.shaped) == 0 {
		return ""
	}
	out, err := exec.Command("ip", "netns", "exec", tn.sw, "nft", "list", "table", "bridge", "cohort_loss").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(nft list: %v)", err)
	}
	rule := regexp.MustCompile(`(iifname|oifname) "([^"]+)" .* counter packets (\d+)`)
	var by []string
	for _, m := range rule.FindAllStringSubmatch(string(out), -1) {
		way := "from"
		if m[1] == "oifname" {
			way = "to"
		}
		by = append(by, fmt.Sprintf("%s %s %s", m[3], way, m[2]))
	}
	return strings.Join(by, ", ")
}

// linkBytes is what host h's eth0 received and sent.
func (tn *testNet) linkBytes(h string) (rx, tx uint64, err error) {
	out, err := exec.Command("ip", "-n", tn.hosts[h].ns, "-j", "-s", "link", "show", "dev", "eth0").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("ip link show on %s: %w", h, err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
			TX struct {
				Bytes uint64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("ip -j link show on %s: %v: %s", h, err, out)
	}
	return links[0].Stats.RX.Bytes, links[0].Stats.TX.Bytes, nil
}
