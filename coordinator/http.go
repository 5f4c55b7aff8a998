package coordinator

// The dashboard: a read-only HTTP server (Config.HTTP) that shows this node's replica of the
// state. Pages:
//
//	/                 cluster status: this node, leader, voters and aggregators, cohorts with round progress
//	/cohort/{id}      a cohort: proposal, current round, loss and share charts, contributions
//	/api/cohort/{id}  the cohort's report (package report) as JSON
//	/api/status       this node's protocol.Status as JSON
//	/metrics          Prometheus metrics (metrics.go)
//
// Pages are html/template (every value escaped), with no script and no external resource, and
// reload themselves every few seconds.

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/protocol"
)

// RefreshSeconds is how often dashboard pages reload themselves.
const RefreshSeconds = 5

// maxPageRounds bounds the rounds listed on a cohort page (the newest); the JSON has them all.
const maxPageRounds = 50

//go:embed web/*.html
var webFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"bytes":  report.Bytes,
	"pct":    func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + "%" },
	"short":  func(s string) string { return s[:min(len(s), 8)] },
	"time":   func(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05Z") },
	"f4":     func(x *float64) string { return strconv.FormatFloat(*x, 'f', 4, 64) },
	"pctp":   func(x *float64) string { return strconv.FormatFloat(100**x, 'f', 2, 64) + "%" },
	"infl":   func(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) },
	"status": func(s string) string { return "st-" + s },
	"headData": func(refresh int, title string) map[string]any {
		return map[string]any{"Refresh": refresh, "Title": title}
	},
	"footData": func(node, now string, refresh int) map[string]any {
		return map[string]any{"Node": node, "Now": now, "Refresh": refresh}
	},
}).ParseFS(webFS, "web/*.html"))

// webState is the dashboard's share of the Server.
type webState struct {
	mu     sync.Mutex
	addr   string                // listening address once started
	charts map[uint64]chartCache // by cohort
}

// chartCache holds a cohort's rendered charts for one applied index: many viewers of a page cost
// one rendering per state change.
type chartCache struct {
	applied      uint64
	loss, shares template.HTML
}

// HTTPAddr is the address the dashboard listens on, "" when it is off or not started yet.
func (s *Server) HTTPAddr() string {
	s.web.mu.Lock()
	defer s.web.mu.Unlock()
	return s.web.addr
}

// validateHTTP checks Config.HTTP: empty (off) or host:port, another port than Listen's.
func validateHTTP(c *Config) error {
	if c.HTTP == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
		return fmt.Errorf("coordinator: --http %q: %w", c.HTTP, err)
	}
	if c.HTTP == c.Listen {
		return fmt.Errorf("coordinator: --http %q: raft listens on that TCP port; give another", c.HTTP)
	}
	return nil
}

// startHTTP starts the dashboard when Config.HTTP is set; the returned function stops it.
func (s *Server) startHTTP(ctx context.Context) (stop func(), err error) {
	if s.cfg.HTTP == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", s.cfg.HTTP)
	if err != nil {
		return nil, fmt.Errorf("coordinator: dashboard: %w", err)
	}
	srv := &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.web.mu.Lock()
	s.web.addr = ln.Addr().String()
	s.web.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("dashboard stopped", "err", err)
		}
	}()
	s.log.Info("dashboard listening", "url", "http://"+ln.Addr().String()+"/")
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-done
		s.web.mu.Lock()
		s.web.addr = ""
		s.web.mu.Unlock()
	}, nil
}

// httpHandler routes the dashboard's pages.
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.pageStatus)
	mux.HandleFunc("GET /cohort/{id}", s.pageCohort)
	mux.HandleFunc("GET /api/cohort/{id}", s.apiCohort)
	mux.HandleFunc("GET /api/status", s.apiStatus)
	metrics := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)})
	mux.Handle("GET /metrics", metrics)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		mux.ServeHTTP(rec, r)
		_, pattern := mux.Handler(r)
		if pattern == "" {
			pattern = "other"
		}
		s.metrics.observeHTTP(pattern, rec.code)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// statusPage is the data of the / page.
type statusPage struct {
	Refresh int
	Status  protocol.Status
	Cohorts []cohortRow
	Now     string
}

// cohortRow is one cohort in the status page.
type cohortRow struct {
	ID, Proposal          uint64
	Name, Status          string
	Members               int
	Round, Planned        uint32
	RoundStatus           string
	Receipts, Participant int
	Paid, Pool            uint64
}

func (s *Server) pageStatus(w http.ResponseWriter, r *http.Request) {
	page := statusPage{Refresh: RefreshSeconds, Status: s.Status(), Now: s.cfg.Now().UTC().Format(time.RFC3339)}
	err := s.node.View(func(st *consensus.State) error {
		pools := map[uint64]consensus.Pool{}
		for _, p := range st.Pools() {
			pools[p.Cohort] = p
		}
		for _, c := range st.Cohorts() {
			row := cohortRow{ID: c.ID, Proposal: c.Proposal, Status: string(c.Status), Members: len(c.Members), Round: c.CurrentRound}
			if p, err := st.Proposal(c.Proposal); err == nil {
				row.Name, row.Planned, row.Pool = p.Name, p.Params.Rounds, p.RewardPool
			}
			if c.CurrentRound > 0 {
				if rd, err := st.Round(c.ID, c.CurrentRound); err == nil {
					row.RoundStatus, row.Receipts, row.Participant = string(rd.Status), len(rd.Receipts), len(rd.Participants)
				}
			}
			if p, ok := pools[c.ID]; ok {
				row.Paid, row.Pool = p.Paid, p.Total
			}
			page.Cohorts = append(page.Cohorts, row)
		}
		return nil
	})
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, err)
		return
	}
	s.render(w, "status.html", page)
}

// cohortPage is the data of the /cohort/{id} page.
type cohortPage struct {
	Refresh      int
	Node         string
	Role         string
	Leader       string
	Now          string
	Proposal     consensus.Proposal
	R            report.Report
	Current      *report.Round // the latest round, nil before the first
	DeadlineIn   string        // "in 12s" or "passed 3s ago"
	Loss, Shares template.HTML // inline SVG
	Rounds       []report.Round
	RoundsCut    int // older rounds not listed
}

func (s *Server) pageCohort(w http.ResponseWriter, r *http.Request) {
	rep, p, applied, code, err := s.cohortReport(r)
	if err != nil {
		s.httpError(w, code, err)
		return
	}
	now := s.cfg.Now()
	lid, _ := s.node.Leader()
	page := cohortPage{Refresh: RefreshSeconds, Node: s.cfg.ID, Role: s.node.State(), Leader: lid,
		Now: now.UTC().Format(time.RFC3339), Proposal: p, R: rep}
	if n := len(rep.Rounds); n > 0 {
		cur := rep.Rounds[n-1]
		page.Current = &cur
		left := time.UnixMilli(cur.Deadline).Sub(now).Round(time.Second)
		if left >= 0 {
			page.DeadlineIn = "in " + left.String()
		} else {
			page.DeadlineIn = "passed " + (-left).String() + " ago"
		}
		from := max(0, n-maxPageRounds)
		page.RoundsCut = from
		for i := n - 1; i >= from; i-- { // newest first
			page.Rounds = append(page.Rounds, rep.Rounds[i])
		}
	}
	page.Loss, page.Shares, err = s.charts(rep, applied)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, err)
		return
	}
	s.render(w, "cohort.html", page)
}

func (s *Server) apiCohort(w http.ResponseWriter, r *http.Request) {
	rep, _, _, code, err := s.cohortReport(r)
	if err != nil {
		s.httpError(w, code, err)
		return
	}
	var buf bytes.Buffer
	if err := report.WriteJSON(&buf, rep); err != nil {
		s.httpError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(buf.Bytes())
}

func (s *Server) apiStatus(w http.ResponseWriter, _ *http.Request) {
	b, err := json.MarshalIndent(s.Status(), "", "  ")
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// cohortReport builds the report of the cohort named by the request's {id} from this node's
// replica, with the proposal and the applied index it was read at. On error it gives the HTTP
// status to answer with.
func (s *Server) cohortReport(r *http.Request) (report.Report, consensus.Proposal, uint64, int, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		return report.Report{}, consensus.Proposal{}, 0, http.StatusBadRequest, fmt.Errorf("cohort %q: want a cohort number", r.PathValue("id"))
	}
	var (
		c       consensus.Cohort
		p       consensus.Proposal
		rounds  []consensus.Round
		l       consensus.Ledger
		applied uint64
	)
	err = s.node.View(func(st *consensus.State) error {
		var err error
		if c, err = st.Cohort(id); err != nil {
			return err
		}
		if p, err = st.Proposal(c.Proposal); err != nil {
			return err
		}
		if rounds, err = st.Rounds(id); err != nil {
			return err
		}
		l = st.LedgerPage(id, 0, st.NumPayouts(id))
		return nil
	})
	if errors.Is(err, consensus.ErrNotFound) {
		return report.Report{}, p, 0, http.StatusNotFound, err
	}
	if err != nil {
		return report.Report{}, p, 0, http.StatusInternalServerError, err
	}
	applied = s.node.AppliedIndex()
	return report.Build(p, c, rounds, l), p, applied, http.StatusOK, nil
}

// charts renders (or takes from the cache) the cohort's loss and share charts as inline SVG.
func (s *Server) charts(rep report.Report, applied uint64) (loss, shares template.HTML, err error) {
	s.web.mu.Lock()
	cc, ok := s.web.charts[rep.Cohort]
	s.web.mu.Unlock()
	if ok && cc.applied == applied {
		return cc.loss, cc.shares, nil
	}
	lb, err := report.LossSVG(rep)
	if err != nil {
		return "", "", err
	}
	sb, err := report.SharesSVG(rep)
	if err != nil {
		return "", "", err
	}
	// The SVG comes from our own renderer, which escapes every text it draws (names included).
	cc = chartCache{applied: applied, loss: template.HTML(inlineSVG(lb)), shares: template.HTML(inlineSVG(sb))}
	s.web.mu.Lock()
	if s.web.charts == nil {
		s.web.charts = map[uint64]chartCache{}
	}
	s.web.charts[rep.Cohort] = cc
	s.web.mu.Unlock()
	return cc.loss, cc.shares, nil
}

// inlineSVG drops what precedes the <svg> element (the XML declaration and a comment), which has
// no place inside an HTML document.
func inlineSVG(b []byte) []byte {
	if i := bytes.Index(b, []byte("<svg")); i >= 0 {
		return b[i:]
	}
	return nil
}

// render executes a page template into a buffer first, so a failure yields a clean 500.
func (s *Server) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.httpError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

func (s *Server) httpError(w http.ResponseWriter, code int, err error) {
	if code >= 500 {
		s.log.Warn("dashboard", "err", err)
	}
	http.Error(w, err.Error(), code) // text/plain with nosniff: nothing in it is interpreted
}
