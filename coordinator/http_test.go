package coordinator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/client"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/protocol"
)

// dashboardNode starts a single in-memory coordinator with the dashboard on a free port and,
// through a client, a passed proposal whose cohort 1 has one member (alice) waiting for a
// second, so no round opens and the pages are deterministic.
func dashboardNode(t *testing.T) (*Server, string) {
	t.Helper()
	sk := bound(t)
	addr := sk.Addr()
	s, err := New(Config{ID: "c1", InMemory: true, Listen: addr, PacketConn: sk.UDP, RaftListener: sk.TCP, Peers: []consensus.Peer{{ID: "c1", Addr: addr, Key: testIdentity(t, "c1").NodeID().String()}},
		Identity: testIdentity(t, "c1"), Raft: fastRaft(), Tick: 50 * time.Millisecond, HTTP: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	waitFor(t, 10*time.Second, "node registered and dashboard up", func() bool {
		return len(s.Status().Coordinators) == 1 && s.HTTPAddr() != ""
	})
	cl, err := client.Dial(client.Config{Addrs: []string{addr}, Identity: testIdentity(t, "alice"), Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	bg := context.Background()
	if err := cl.EnsureRegistered(bg, "alice", []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	operate(t, []string{addr}, 1_000_000, cl)
	res, err := cl.Submit(bg, &consensus.ProposeBody{Name: "fmnist-<mlp>", Model: "mlp:784-256-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 50, Rounds: 10, Codec: "topk:0.01+q4"}, RewardPool: 1_000_000,
		MinMembers: 2, QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 300})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Submit(bg, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "cohort 1", func() bool {
		r, err := cl.Query(bg, protocol.Query{What: protocol.QueryCohort, ID: 1})
		return err == nil && r.Cohort != nil
	})
	fp := make([]byte, 32)
	fp[0] = 1
	if _, err := cl.Submit(bg, &consensus.JoinBody{Cohort: 1, Contributors: []consensus.ContributorData{
		{Name: "alice", Fingerprint: fp, Samples: 1234}}}); err != nil {
		t.Fatal(err)
	}
	return s, "http://" + s.HTTPAddr()
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestDashboard(t *testing.T) {
	_, base := dashboardNode(t)

	code, h, body := get(t, base+"/")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("/: %d %s", code, h.Get("Content-Type"))
	}
	for _, want := range []string{"Coordinator cluster", `href="/cohort/1"`, "fmnist-&lt;mlp&gt;", "Leader", `http-equiv="refresh"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/ lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "fmnist-<mlp>") {
		t.Errorf("/ shows the proposal name unescaped")
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}

	code, _, body = get(t, base+"/cohort/1")
	if code != 200 {
		t.Fatalf("/cohort/1: %d\n%s", code, body)
	}
	for _, want := range []string{`id="contributions"`, "<td>alice</td>", "1234", "<svg", "validation loss", "no round yet",
		"fmnist-&lt;mlp&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("/cohort/1 lacks %q", want)
		}
	}
	if strings.Contains(body, "<?xml") || strings.Contains(body, "fmnist-<mlp>") || strings.Contains(body, "<script") {
		t.Errorf("/cohort/1 has an XML prolog, an unescaped name or a script")
	}

	code, h, body = get(t, base+"/api/cohort/1")
	if code != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("/api/cohort/1: %d %s", code, h.Get("Content-Type"))
	}
	var rep report.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Cohort != 1 || rep.Name != "fmnist-<mlp>" || len(rep.Contributors) != 1 || rep.Contributors[0].Samples != 1234 ||
		rep.Totals.Pool != 1_000_000 {
		t.Errorf("report %+v", rep)
	}

	for path, want := range map[string]int{"/cohort/2": 404, "/cohort/x": 400, "/api/cohort/0": 400, "/nope": 404} {
		if code, _, _ := get(t, base+path); code != want {
			t.Errorf("%s: %d, want %d", path, code, want)
		}
	}

	code, h, body = get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	for _, name := range []string{"cohort_raft_role", "cohort_raft_term", "cohort_raft_applied_index", "cohort_raft_command_entries_total",
		"cohort_raft_commands_applied_total", "cohort_members",
		"cohort_proposals", "cohort_cohorts", "cohort_cohort_current_round", "cohort_cohort_rounds_closed_total",
		"cohort_cohort_members", "cohort_uploads_total", "cohort_round_duration_seconds", "cohort_score_duration_seconds",
		"cohort_http_requests_total", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	value := func(name string, labels map[string]string) float64 {
		for _, m := range fams[name].GetMetric() {
			ok := true
			for _, lp := range m.GetLabel() {
				if v, has := labels[lp.GetName()]; has && v != lp.GetValue() {
					ok = false
				}
			}
			if ok {
				if g := m.GetGauge(); g != nil {
					return g.GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
		t.Fatalf("%s%v not found", name, labels)
		return 0
	}
	if v := value("cohort_raft_role", map[string]string{"role": "leader"}); v != 1 {
		t.Errorf("cohort_raft_role{role=leader} = %v", v)
	}
	if v := value("cohort_cohort_members", map[string]string{"cohort": "1"}); v != 1 {
		t.Errorf("cohort_cohort_members{cohort=1} = %v", v)
	}
	if v := value("cohort_proposals", map[string]string{"status": "passed"}); v != 1 {
		t.Errorf("cohort_proposals{status=passed} = %v", v)
	}
}

// TestMetricsObserveNilSafe: the data plane may call the hooks on a server built without New.
func TestMetricsObserveNilSafe(t *testing.T) {
	var m *metrics
	m.observeUpload(10, time.Second)
	m.observeRoundClosed(time.Second)
	m.observeScore(time.Second, nil)
	m.observeHTTP("x", 200)
}

// TestDashboardInChromium loads the cohort page in headless Chromium (when installed) and checks
// the rendered DOM.
func TestDashboardInChromium(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no %s (apt-get install chromium to run this test): %v", chromium, err)
	}
	_, base := dashboardNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(), "--dump-dom", base+"/cohort/1")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium: %v\n%s", err, stderr)
	}
	dom := string(out)
	for _, want := range []string{`<span id="name">fmnist-&lt;mlp&gt;</span>`, `<table id="contributions">`, "<td>alice</td>", "<svg"} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q:\n%s", want, dom)
		}
	}
}
