package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortlab/cohort/internal/netutil"
	"github.com/cohortlab/cohort/transport"
)

// stageArgs are the training settings of the stage process tests: a small GPT on the embedded
// play, quick enough for several runs.
var stageArgs = []string{"--model", "gpt:3-32-2-16", "--data", "embedded", "--batch", "4", "--val-samples", "40", "--seed", "3", "--lr", "3e-3", "--clip", "0.5"}

// stageGroup is S `cohort stage` processes of one group: their keys, and UDP sockets the test
// holds for the group's life (handed to every process of a stage, restarts included).
type stageGroup struct {
	t     *testing.T
	bin   string
	dir   string
	socks []netutil.Sockets
	keys  []string // key files
	ids   []transport.NodeID
}

func newStageGroup(t *testing.T, S int) *stageGroup {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	g := &stageGroup{t: t, bin: bin, dir: t.TempDir()}
	for s := 0; s < S; s++ {
		sock, err := netutil.Listen()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sock.Close() })
		id, err := transport.GenerateIdentity(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(g.dir, fmt.Sprintf("stage%d.key", s))
		if err := id.SaveKey(key); err != nil {
			t.Fatal(err)
		}
		g.socks, g.keys, g.ids = append(g.socks, sock), append(g.keys, key), append(g.ids, id.NodeID())
	}
	return g
}

// peers is the group's --peers, with ids in place of the stages' keys.
func (g *stageGroup) peers(ids []transport.NodeID) string {
	var ps []string
	for s, id := range ids {
		ps = append(ps, id.String()+"@"+g.socks[s].Addr())
	}
	return strings.Join(ps, ",")
}

type stageProc struct {
	cmd      *exec.Cmd
	out, err *bytes.Buffer
	done     chan error
	exited   time.Time
}

// start runs stage s of the group with the group's settings and extra flags, listening on the
// socket the test holds.
func (g *stageGroup) start(s int, peers, key string, extra ...string) *stageProc {
	g.t.Helper()
	S := len(g.socks)
	udp, err := g.socks[s].UDP.File()
	if err != nil {
		g.t.Fatal(err)
	}
	args := append([]string{"stage", "--stage", fmt.Sprintf("%d/%d", s, S), "--key", key, "--peers", peers, "--listen-fd", "3",
		"--json", "--connect-timeout", "1m"}, stageArgs...)
	cmd := exec.Command(g.bin, append(args, extra...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.ExtraFiles = []*os.File{udp}
	p := &stageProc{cmd: cmd, out: &bytes.Buffer{}, err: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.err
	startCmd(g.t, cmd)
	go func() {
		err := cmd.Wait()
		p.exited = time.Now()
		p.done <- err
	}()
	g.t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	return p
}

// startAll starts every stage with its own key.
func (g *stageGroup) startAll(extra func(s int) []string) []*stageProc {
	var ps []*stageProc
	for s := range g.socks {
		ps = append(ps, g.start(s, g.peers(g.ids), g.keys[s], extra(s)...))
	}
	return ps
}

// wait returns the process's exit error, failing the test after timeout.
func (p *stageProc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("%v did not exit within %s; stderr:\n%s", p.cmd.Args[:4], timeout, p.err)
		return nil
	}
}

// stageJSON is the fields of a stage's --json summary the tests read.
type stageJSON struct {
	Stage        int     `json:"stage"`
	ResumedFrom  int     `json:"resumed_from"`
	Parameters   int     `json:"parameters"`
	StateBytes   int64   `json:"state_bytes"`
	FinalValLoss float64 `json:"final_val_loss"`
	ModelHash    string  `json:"model_hash"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	History      []struct {
		ValLoss   float64 `json:"val_loss"`
		TrainLoss float64 `json:"train_loss"`
	} `json:"history"`
}

func lastJSON(t *testing.T, out []byte, v any) {
	t.Helper()
	var last string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "{") {
			last = sc.Text()
		}
	}
	if err := json.Unmarshal([]byte(last), v); err != nil {
		t.Fatalf("no JSON summary in %q: %v", out, err)
	}
}

// inProcess is `cohort train --stages S --workers 1` of the same settings, run by the same binary.
func inProcess(t *testing.T, bin string, S, rounds, H int) stageJSON {
	t.Helper()
	args := append([]string{"--log-level", "warn", "train", "--workers", "1", "--stages", fmt.Sprint(S), "--rounds", fmt.Sprint(rounds),
		"--inner-steps", fmt.Sprint(H), "--json"}, stageArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cohort train: %v", err)
	}
	var s stageJSON
	lastJSON(t, out, &s)
	return s
}

// TestStageProcessesTrainLikeInProcess: S `cohort stage` processes over QUIC on loopback train to
// the bits `cohort train --stages S --workers 1` computes in one process: every round's losses
// and the final model hash, which the last stage reports; every stage reports its peak RSS.
func TestStageProcessesTrainLikeInProcess(t *testing.T) {
	const rounds, H = 3, 4
	groups := []int{2, 3}
	if testing.Short() {
		groups = groups[:1] // make e2e runs three stages too
	}
	for _, S := range groups {
		t.Run(fmt.Sprintf("S%d", S), func(t *testing.T) {
			g := newStageGroup(t, S)
			procs := g.startAll(func(int) []string { return []string{"--rounds", fmt.Sprint(rounds), "--inner-steps", fmt.Sprint(H)} })
			for s, p := range procs {
				if err := p.wait(t, 2*time.Minute); err != nil {
					t.Fatalf("stage %d: %v\n%s", s, err, p.err)
				}
			}
			want := inProcess(t, g.bin, S, rounds, H)
			var got stageJSON
			lastJSON(t, procs[S-1].out.Bytes(), &got)
			if got.ModelHash == "" || got.ModelHash != want.ModelHash || got.FinalValLoss != want.FinalValLoss {
				t.Errorf("stage processes: model %s val loss %v; in process %s %v", got.ModelHash, got.FinalValLoss, want.ModelHash, want.FinalValLoss)
			}
			if len(got.History) != rounds {
				t.Fatalf("%d rounds reported, want %d", len(got.History), rounds)
			}
			for r := range want.History {
				if got.History[r] != want.History[r] {
					t.Errorf("round %d: %+v, in process %+v", r+1, got.History[r], want.History[r])
				}
			}
			for s, p := range procs {
				var js stageJSON
				lastJSON(t, p.out.Bytes(), &js)
				if js.Stage != s || js.PeakRSSBytes <= 0 || js.Parameters <= 0 {
					t.Errorf("stage %d's summary: %+v", s, js)
				}
			}
		})
	}
}

// TestStageProcessFaults: a stage SIGKILLed mid-run makes its neighbours stop with an error
// within a bounded time (the link timeout, not a hang); the group restarted with the same
// checkpoint directories resumes and ends at the bits of an uninterrupted run.
func TestStageProcessFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes killed and restarted (make e2e)")
	}
	const S, rounds, H = 3, 6, 40
	g := newStageGroup(t, S)
	ckpt := func(s int) string { return filepath.Join(g.dir, fmt.Sprintf("ckpt%d", s)) }
	flags := func(s int) []string {
		return []string{"--rounds", fmt.Sprint(rounds), "--inner-steps", fmt.Sprint(H), "--checkpoint", ckpt(s), "--link-timeout", "2s"}
	}
	procs := g.startAll(flags)
	// Kill stage 1 once it has saved round 2 (its previous checkpoint exists).
	prev := filepath.Join(ckpt(1), "stage-1-of-3.prev.ckpt")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(prev); err == nil {
			break
		}
		select {
		case err := <-procs[1].done:
			t.Fatalf("stage 1 ended before it could be killed: %v\n%s", err, procs[1].err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("stage 1 saved no second round in 2 minutes:\n%s", procs[1].err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := procs[1].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	procs[1].wait(t, 10*time.Second)
	for _, s := range []int{0, 2} {
		err := procs[s].wait(t, 30*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("stage %d after its neighbour's death: %v, want a failure\n%s", s, err, procs[s].err)
		}
		took := procs[s].exited.Sub(killed)
		t.Logf("stage %d stopped %s after the kill: %s", s, took.Round(time.Millisecond), strings.TrimSpace(procs[s].err.String()))
		if took > 20*time.Second {
			t.Errorf("stage %d took %s to stop", s, took)
		}
	}
	// Restart every stage from its checkpoints.
	procs = g.startAll(flags)
	for s, p := range procs {
		if err := p.wait(t, 3*time.Minute); err != nil {
			t.Fatalf("restarted stage %d: %v\n%s", s, err, p.err)
		}
	}
	var got stageJSON
	lastJSON(t, procs[S-1].out.Bytes(), &got)
	if got.ResumedFrom < 1 || got.ResumedFrom >= rounds {
		t.Errorf("resumed after round %d, want one of 1 … %d", got.ResumedFrom, rounds-1)
	}
	want := inProcess(t, g.bin, S, rounds, H)
	t.Logf("resumed after round %d: model %s val loss %v (uninterrupted %s %v)", got.ResumedFrom, got.ModelHash, got.FinalValLoss, want.ModelHash, want.FinalValLoss)
	if got.ModelHash != want.ModelHash || got.FinalValLoss != want.FinalValLoss {
		t.Errorf("resumed after round %d: model %s val loss %v; uninterrupted %s %v", got.ResumedFrom, got.ModelHash, got.FinalValLoss, want.ModelHash, want.FinalValLoss)
	}
}

// TestStageRefusesUnknownKeys: a stage whose neighbour answers with a key other than --peers
// lists stops at once, naming it; a stage refuses a connection from a key its --peers does not
// list, so the stranger never links.
func TestStageRefusesUnknownKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes waiting out their connect timeouts (make e2e)")
	}
	g := newStageGroup(t, 2)
	stranger, err := transport.GenerateIdentity(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	strangerKey := filepath.Join(g.dir, "stranger.key")
	if err := stranger.SaveKey(strangerKey); err != nil {
		t.Fatal(err)
	}
	short := []string{"--rounds", "1", "--inner-steps", "1", "--connect-timeout", "3s"}

	// Stage 0 expects the stranger's key at stage 1's address; stage 1 answers with its own.
	s1 := g.start(1, g.peers(g.ids), g.keys[1], short...)
	s0 := g.start(0, g.peers([]transport.NodeID{g.ids[0], stranger.NodeID()}), g.keys[0], short...)
	if err := s0.wait(t, 30*time.Second); err == nil || !strings.Contains(s0.err.String(), "not allowed") && !strings.Contains(s0.err.String(), "unexpected peer") {
		t.Errorf("stage 0 dialling a stage with another key: %v\n%s", err, s0.err)
	}
	if err := s1.wait(t, 30*time.Second); err == nil {
		t.Errorf("stage 1 linked with no stage 0:\n%s", s1.out)
	}

	// The stranger claims stage 0 (its --peers names its own key); stage 1 admits only stage 0's.
	s1 = g.start(1, g.peers(g.ids), g.keys[1], short...)
	s0 = g.start(0, g.peers([]transport.NodeID{stranger.NodeID(), g.ids[1]}), strangerKey, short...)
	if err := s0.wait(t, 30*time.Second); err == nil {
		t.Errorf("a stranger linked to stage 1:\n%s", s0.out)
	}
	if err := s1.wait(t, 30*time.Second); err == nil {
		t.Errorf("stage 1 linked with a stranger:\n%s", s1.out)
	}
	t.Logf("stranger: %s", strings.TrimSpace(s0.err.String()))
}
