package coordinator

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cohortlab/cohort/consensus"
)

// metrics are one Server's Prometheus metrics, in a registry of its own (several servers share a
// process in tests and simulations): a collector that reads the replicated state on every scrape,
// plus counters and histograms the data plane feeds through the observe* methods. Every method
// is safe on a nil *metrics and for concurrent use.
type metrics struct {
	reg *prometheus.Registry

	uploads       prometheus.Counter
	uploadBytes   prometheus.Counter
	uploadSeconds prometheus.Histogram
	roundsClosed  prometheus.Counter
	roundSeconds  prometheus.Histogram
	scoreSeconds  prometheus.Histogram
	scoreFailures prometheus.Counter
	httpRequests  *prometheus.CounterVec
	refused       *prometheus.CounterVec
}

// durationBuckets span 10 ms to 10 min (uploads over slow links, rounds of many inner steps).
var durationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.uploads = prometheus.NewCounter(prometheus.CounterOpts{Name: "cohort_uploads_total",
		Help: "Pseudo-gradient slice uploads accepted by this node."})
	m.uploadBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "cohort_upload_bytes_total",
		Help: "Bytes of accepted pseudo-gradient slice uploads."})
	m.uploadSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cohort_upload_duration_seconds",
		Help: "Time to receive and check one slice upload.", Buckets: durationBuckets})
	m.roundsClosed = prometheus.NewCounter(prometheus.CounterOpts{Name: "cohort_rounds_closed_by_node_total",
		Help: "Rounds this node closed while leader."})
	m.roundSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cohort_round_duration_seconds",
		Help: "Time from opening a round to closing it, on the leader that closed it.", Buckets: durationBuckets})
	m.scoreSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cohort_score_duration_seconds",
		Help: "Time to score one round (validation and ScoreCommit).", Buckets: durationBuckets})
	m.scoreFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "cohort_score_failures_total",
		Help: "Rounds this node failed to score."})
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cohort_http_requests_total",
		Help: "Dashboard and API requests by page and status code."}, []string{"page", "code"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cohort_refused_total",
		Help: "Connections and requests refused on a limit before any work: connection_limit, busy, bad_frame, unknown_type, payload_limit, too_slow, refused_from_header, rate_limited_source, rate_limited_key, long_polls."},
		[]string{"reason"})
	m.reg.MustRegister(m.uploads, m.uploadBytes, m.uploadSeconds, m.roundsClosed, m.roundSeconds, m.scoreSeconds,
		m.scoreFailures, m.httpRequests, m.refused, newStateCollector(s),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeUpload records one accepted slice upload of n bytes that took d to receive.
func (m *metrics) observeUpload(n int, d time.Duration) {
	if m == nil {
		return
	}
	m.uploads.Inc()
	m.uploadBytes.Add(float64(max(n, 0)))
	m.uploadSeconds.Observe(d.Seconds())
}

// observeRoundClosed records a round this node (the leader) closed, d after it opened.
func (m *metrics) observeRoundClosed(d time.Duration) {
	if m == nil {
		return
	}
	m.roundsClosed.Inc()
	m.roundSeconds.Observe(max(d, 0).Seconds())
}

// observeScore records the time to score one round; err non-nil counts a failure.
func (m *metrics) observeScore(d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.scoreFailures.Inc()
		return
	}
	m.scoreSeconds.Observe(d.Seconds())
}

// observeRefused counts a connection or request refused for reason (see cohort_refused_total).
func (m *metrics) observeRefused(reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(reason).Inc()
}

func (m *metrics) observeHTTP(page string, code int) {
	if m == nil {
		return
	}
	m.httpRequests.WithLabelValues(page, strconv.Itoa(code)).Inc()
}

// stateCollector reads the node's raft status and replicated state on every scrape.
type stateCollector struct {
	s *Server

	role, term, lastIndex, appliedIndex, voters *prometheus.Desc
	entries, commands, aggregators              *prometheus.Desc
	coordinators, members, proposals, cohorts   *prometheus.Desc
	currentRound, roundsClosed, cohortMembers   *prometheus.Desc
	participants, receipts                      *prometheus.Desc
	pool, paid, carry                           *prometheus.Desc
}

func newStateCollector(s *Server) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &stateCollector{s: s,
		role:          d("cohort_raft_role", "1 for this node's current raft role, 0 for the others.", "role"),
		term:          d("cohort_raft_term", "Current raft term."),
		lastIndex:     d("cohort_raft_last_log_index", "Index of the last raft log entry."),
		appliedIndex:  d("cohort_raft_applied_index", "Index of the last log entry applied to the state."),
		voters:        d("cohort_raft_voters", "Raft voters in the configuration."),
		entries:       d("cohort_raft_command_entries_total", "Command log entries (commands and batches) applied since start."),
		commands:      d("cohort_raft_commands_applied_total", "Signed commands those log entries carried (group commit)."),
		aggregators:   d("cohort_raft_aggregators", "Aggregators (raft non-voters) in the configuration."),
		coordinators:  d("cohort_coordinators", "Coordinator keys registered in the state."),
		members:       d("cohort_members", "Registered members."),
		proposals:     d("cohort_proposals", "Proposals by status.", "status"),
		cohorts:       d("cohort_cohorts", "Cohorts by status.", "status"),
		currentRound:  d("cohort_cohort_current_round", "Latest opened round of a cohort (0 before the first).", "cohort"),
		roundsClosed:  d("cohort_cohort_rounds_closed_total", "Closed rounds of a cohort.", "cohort"),
		cohortMembers: d("cohort_cohort_members", "Members of a cohort.", "cohort"),
		participants:  d("cohort_cohort_round_participants", "Participants of a cohort's latest round.", "cohort"),
		receipts:      d("cohort_cohort_round_receipts", "Receipts so far in a cohort's latest round.", "cohort"),
		pool:          d("cohort_ledger_pool", "Reward pool of a cohort (ledger units).", "cohort"),
		paid:          d("cohort_ledger_paid_total", "Paid out of a cohort's pool so far (ledger units).", "cohort"),
		carry:         d("cohort_ledger_carry", "Budget of scored rounds nobody earned, available later (ledger units).", "cohort"),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.role, c.term, c.lastIndex, c.appliedIndex, c.voters, c.aggregators, c.entries, c.commands,
		c.coordinators, c.members, c.proposals, c.cohorts, c.currentRound, c.roundsClosed, c.cohortMembers, c.participants, c.receipts, c.pool, c.paid, c.carry} {
		ch <- d
	}
}

// raftRoles are the values of consensus.Node.State.
var raftRoles = []string{"Follower", "Candidate", "Leader", "Shutdown"}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	n := c.s.node
	role := n.State()
	for _, r := range raftRoles {
		v := 0.0
		if r == role {
			v = 1
		}
		gauge(c.role, v, strings.ToLower(r))
	}
	stats := n.Stats()
	for d, key := range map[*prometheus.Desc]string{c.term: "term", c.lastIndex: "last_log_index"} {
		if v, err := strconv.ParseUint(stats[key], 10, 64); err == nil {
			gauge(d, float64(v))
		}
	}
	gauge(c.appliedIndex, float64(n.AppliedIndex()))
	entries, cmds := n.ApplyCounts()
	counter(c.entries, float64(entries))
	counter(c.commands, float64(cmds))
	if servers, err := n.Servers(); err == nil {
		voters := 0
		for _, sv := range servers {
			if sv.Suffrage == consensus.Voter {
				voters++
			}
		}
		gauge(c.voters, float64(voters))
		gauge(c.aggregators, float64(len(servers)-voters))
	}
	n.View(func(st *consensus.State) error {
		gauge(c.coordinators, float64(len(st.Coordinators())))
		gauge(c.members, float64(st.NumMembers()))
		props := map[string]int{}
		for _, s := range []consensus.ProposalStatus{consensus.ProposalOpen, consensus.ProposalPassed, consensus.ProposalRejected, consensus.ProposalExpired} {
			props[string(s)] = 0
		}
		for _, p := range st.Proposals() {
			props[string(p.Status)]++
		}
		for s, k := range props {
			gauge(c.proposals, float64(k), s)
		}
		cohorts := map[string]int{string(consensus.CohortForming): 0, string(consensus.CohortRunning): 0, string(consensus.CohortDone): 0}
		for _, co := range st.Cohorts() {
			cohorts[string(co.Status)]++
			id := strconv.FormatUint(co.ID, 10)
			gauge(c.currentRound, float64(co.CurrentRound), id)
			gauge(c.cohortMembers, float64(len(co.Members)), id)
			closed := co.CurrentRound
			if co.CurrentRound > 0 {
				if r, err := st.Round(co.ID, co.CurrentRound); err == nil {
					if r.Status != consensus.RoundClosed {
						closed--
					}
					gauge(c.participants, float64(len(r.Participants)), id)
					gauge(c.receipts, float64(len(r.Receipts)), id)
				}
			}
			counter(c.roundsClosed, float64(closed), id)
		}
		for s, k := range cohorts {
			gauge(c.cohorts, float64(k), s)
		}
		for _, p := range st.Pools() {
			id := strconv.FormatUint(p.Cohort, 10)
			gauge(c.pool, float64(p.Total), id)
			counter(c.paid, float64(p.Paid), id)
			gauge(c.carry, float64(p.Carry), id)
		}
		return nil
	})
}
