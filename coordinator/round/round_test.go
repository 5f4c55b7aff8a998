package round

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
)

// t0 is the scripts' time zero: times print as offsets from it.
var t0 = time.UnixMilli(1_700_000_000_000)

// harness is a cohort as the replicated state records it, the replica and the leader's memory:
// what the coordinator gathers into a View and changes by executing Actions.
type harness struct {
	now        time.Time
	cfg        Config
	cohort     consensus.Cohort
	minMembers uint32
	rounds     []consensus.Round
	applied    uint32
	hash       [32]byte
	params     int
	self       string
	coords     []string
	live       []string
	leader     Leadership
	extended   uint32
	lastCheck  time.Time
	suspects   map[string]int
	distrusted map[string]bool

	slice *Slice
	down  *Downlink
}

func rel(ms int64) string { return time.UnixMilli(ms).Sub(t0).String() }

func (h *harness) view() View {
	return View{Now: h.now, Config: h.cfg, Cohort: h.cohort, MinMembers: h.minMembers, Rounds: slices.Clone(h.rounds),
		Applied: h.applied, Hash: h.hash, Params: h.params, Self: h.self, Coordinators: h.coords, Leadership: h.leader,
		Extended: h.extended, LastCheck: h.lastCheck, Suspects: h.suspects}
}

func (h *harness) sliceView() SliceView {
	return SliceView{Round: *h.last(), Leadership: h.leader, Config: h.cfg}
}

func (h *harness) last() *consensus.Round {
	if len(h.rounds) == 0 {
		return nil
	}
	return &h.rounds[len(h.rounds)-1]
}

// next asks for the leader's action (answering a Check from h.live), executes it on the state
// and prints it.
func (h *harness) next() string {
	var out strings.Builder
	a := h.step(func() { out.WriteString("check: live " + strings.Join(h.live, ",") + "\n") })
	out.WriteString(h.format(a))
	return out.String()
}

// step asks for the leader's action (answering a Check from h.live, after calling checked) and
// executes it on the state.
func (h *harness) step(checked func()) Action {
	v := h.view()
	a := Next(v)
	if a.Kind == Check {
		checked()
		v.Checked, v.Live, v.Distrusted = true, h.live, h.distrusted
		a = Next(v)
		if a.Kind == Check {
			panic("Check after Checked")
		}
	}
	if a.LiveChecked {
		h.lastCheck, h.suspects = h.now, a.Suspects
	}
	now := h.now.UnixMilli()
	switch a.Kind {
	case Open:
		h.rounds = append(h.rounds, consensus.Round{Cohort: h.cohort.ID, Number: a.Round, Participants: a.Participants,
			Slices: a.Slices, ModelHash: a.ModelHash[:], Seed: a.Seed, OpenedAt: now, Deadline: a.Deadline,
			Status: consensus.RoundOpen, Excluded: a.Excluded})
		h.cohort.CurrentRound = a.Round
	case Close, Abandon:
		r := h.last()
		r.Status, r.ClosedAt, r.NewModelHash = consensus.RoundClosed, now, a.ModelHash[:]
		if a.Kind == Abandon {
			h.applied = r.Number // θ unchanged: the replica moves on
		}
	case Extend:
		h.extended = a.Round
		r := h.last()
		r.Deadline = a.Deadline
		r.Reassignments++
	case Reassign:
		r := h.last()
		r.Slices = slices.Clone(r.Slices)
		for _, m := range a.Moves {
			r.Slices[m.Slice].Aggregator = m.To
		}
		r.Deadline = a.Deadline
		r.Reassignments++
	}
	return a
}

func (h *harness) format(a Action) string {
	var b strings.Builder
	b.WriteString(a.Kind.String())
	switch a.Kind {
	case Open:
		fmt.Fprintf(&b, " round %d participants=%s", a.Round, strings.Join(a.Participants, ","))
		if len(a.Excluded) > 0 {
			fmt.Fprintf(&b, " excluded=%s", strings.Join(a.Excluded, ","))
		}
		for _, s := range a.Slices {
			fmt.Fprintf(&b, " [%d,%d)@%s", s.Start, s.End, s.Aggregator)
		}
		fmt.Fprintf(&b, " deadline=%s seed=%d", rel(a.Deadline), a.Seed-uint64(t0.UnixNano()))
	case Close, Abandon:
		fmt.Fprintf(&b, " round %d", a.Round)
		if a.Why != "" {
			fmt.Fprintf(&b, " (%s)", a.Why)
		}
	case Extend:
		fmt.Fprintf(&b, " round %d deadline=%s", a.Round, rel(a.Deadline))
	case Reassign:
		fmt.Fprintf(&b, " round %d", a.Round)
		for _, m := range a.Moves {
			fmt.Fprintf(&b, " slice %d %s->%s", m.Slice, m.From, m.To)
		}
		fmt.Fprintf(&b, " deadline=%s", rel(a.Deadline))
	}
	if a.LiveChecked {
		ids := make([]string, 0, len(a.Suspects))
		for id := range a.Suspects {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		b.WriteString("\nchecked aggregators")
		if len(ids) > 0 {
			b.WriteString("; suspects:")
		}
		for _, id := range ids {
			fmt.Fprintf(&b, " %s=%d", id, a.Suspects[id])
		}
	}
	return b.String()
}

func (h *harness) state() string {
	var b strings.Builder
	fmt.Fprintf(&b, "now=%s applied=%d current=%d status=%v\n", h.now.Sub(t0), h.applied, h.cohort.CurrentRound, h.cohort.Status)
	for _, r := range h.rounds {
		fmt.Fprintf(&b, "round %d %v opened=%s deadline=%s upload-deadline=%s receipts=%d reassignments=%d", r.Number, r.Status,
			rel(r.OpenedAt), rel(r.Deadline), UploadDeadline(SliceView{Round: r}).Sub(t0), len(r.Receipts), r.Reassignments)
		if r.Scored {
			b.WriteString(" scored")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (h *harness) sliceState() string {
	s := h.slice
	var b strings.Builder
	fmt.Fprintf(&b, "slice [%d,%d) closed=%v updates=%d/%d", s.Start, s.End, s.Closed(), len(s.Updates), len(s.Participants))
	for _, m := range s.Members() {
		u := s.Updates[m]
		fmt.Fprintf(&b, "\n  %s w=%d norm=%.4g", m, u.Weight, Norm(u.Vals))
		if s.Excluded[m] {
			b.WriteString(" excluded")
		}
	}
	return b.String()
}

func floats(x []float32) string {
	s := make([]string, len(x))
	for i, v := range x {
		s[i] = strconv.FormatFloat(float64(v), 'g', 5, 32)
	}
	return strings.Join(s, " ")
}

func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var h *harness
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if h == nil && d.Cmd != "init" {
				d.Fatalf(t, "init first")
			}
			switch d.Cmd {
			case "init":
				h = &harness{now: t0, self: "c1", coords: []string{"c1", "c2", "c3"}, params: 8, minMembers: 1,
					suspects: map[string]int{}, distrusted: map[string]bool{}}
				h.cohort = consensus.Cohort{ID: 1, Status: consensus.CohortRunning}
				members := []string{"a", "b", "c"}
				down := "fp32"
				for _, arg := range d.CmdArgs {
					val := ""
					if len(arg.Vals) > 0 {
						val = arg.Vals[0]
					}
					switch arg.Key {
					case "members":
						members = strings.Split(val, ",")
					case "coords":
						h.coords = strings.Split(val, ",")
					case "self":
						h.self = val
					case "params":
						h.params = atoi(t, d, val)
					case "min":
						h.minMembers = uint32(atoi(t, d, val))
					case "timeout":
						h.cfg.Timeout = dur(t, d, val)
					case "abort":
						h.cfg.AbortAfter = dur(t, d, val)
					case "scorewait":
						h.cfg.ScoreWait = dur(t, d, val)
					case "livecheck":
						h.cfg.LiveCheck = dur(t, d, val)
					case "clip":
						h.cfg.ClipMultiple = flt(t, d, val)
					case "drop":
						h.cfg.DropMultiple = flt(t, d, val)
					case "down":
						down = val
					default:
						d.Fatalf(t, "unknown init argument %s", arg.Key)
					}
				}
				if err := h.cfg.Validate(); err != nil {
					return err.Error()
				}
				h.cfg = h.cfg.WithDefaults()
				for _, m := range members {
					h.cohort.Members = append(h.cohort.Members, consensus.CohortMember{Member: m})
				}
				h.live = h.coords
				h.leader = Leadership{Leader: h.self, Since: t0.Add(-time.Hour)}
				setting, err := compress.Parse(down)
				if err != nil {
					d.Fatalf(t, "%v", err)
				}
				h.down = NewDownlink(setting, nil)
				return "ok"
			case "tick":
				h.now = h.now.Add(dur(t, d, d.CmdArgs[0].Key))
				return h.now.Sub(t0).String()
			case "live":
				h.live = nil
				for _, a := range d.CmdArgs {
					h.live = append(h.live, a.Key)
				}
				return "ok"
			case "leader-change":
				h.leader = Leadership{Leader: "c2", Since: h.now}
				if len(d.CmdArgs) > 0 && d.CmdArgs[0].Key == "none" {
					h.leader.Leader = ""
				}
				return "ok"
			case "distrust":
				for _, a := range d.CmdArgs {
					h.distrusted[a.Key] = true
				}
				return "ok"
			case "receipt":
				r := h.last()
				for _, a := range d.CmdArgs {
					r.Receipts = append(r.Receipts, consensus.Receipt{Member: a.Key, At: h.now.UnixMilli()})
				}
				return "ok"
			case "apply":
				h.applied = h.cohort.CurrentRound
				h.hash[0]++
				return fmt.Sprintf("applied %d", h.applied)
			case "done":
				h.cohort.Status = consensus.CohortDone
				return "ok"
			case "score":
				r := h.last()
				if d.HasArg("round") {
					var n int
					d.ScanArgs(t, "round", &n)
					r = &h.rounds[n-1]
				}
				r.Scored = true
				return "ok"
			case "next":
				return h.next()
			case "state":
				return h.state()
			case "slice":
				r := h.last()
				n := 0
				if d.HasArg("n") {
					d.ScanArgs(t, "n", &n)
				}
				sl := r.Slices[n]
				h.slice = NewSlice(*r, int(sl.Start), int(sl.End))
				return h.sliceState()
			case "upload":
				var member string
				var w uint64 = 1
				d.ScanArgs(t, "member", &member)
				if d.HasArg("w") {
					d.ScanArgs(t, "w", &w)
				}
				vals := make([]float32, h.slice.End-h.slice.Start)
				if d.HasArg("norm") {
					var norm float64
					d.ScanArgs(t, "norm", &norm)
					for i := range vals {
						vals[i] = float32(norm / math.Sqrt(float64(len(vals))))
					}
				}
				if d.HasArg("vals") {
					for _, a := range d.CmdArgs {
						if a.Key == "vals" {
							vs := strings.Split(a.Vals[0], ",")
							if len(vs) != len(vals) {
								d.Fatalf(t, "want %d values", len(vals))
							}
							for i, s := range vs {
								vals[i] = float32(flt(t, d, s))
							}
						}
					}
				}
				if err := h.slice.Admit(member, w, vals, h.now, h.sliceView()); err != nil {
					return "error: " + err.Error()
				}
				if h.slice.Complete() {
					return "ok: complete"
				}
				return "ok"
			case "due":
				closeNow, next := h.slice.Due(h.now, h.sliceView())
				switch {
				case closeNow:
					return "close"
				case next.IsZero():
					return "closed"
				}
				return "wait until " + next.Sub(t0).String()
			case "finalize":
				avg, n, err := h.slice.Finalize(h.cfg)
				if err != nil {
					return fmt.Sprintf("error: %v (updates %d)", err, n)
				}
				msg, err := h.down.Encode(h.slice.Round, h.slice.Start, avg)
				if err != nil {
					return "error: " + err.Error()
				}
				codec, err := compress.New(compress.Config{Setting: h.down.setting})
				if err != nil {
					d.Fatalf(t, "%v", err)
				}
				dec, err := codec.Decode(nil, msg)
				if err != nil {
					d.Fatalf(t, "%v", err)
				}
				return fmt.Sprintf("aggregate: %s (updates %d)\nsent:      %s\nresidual:  %s", floats(avg), n, floats(dec), floats(h.down.Residual(h.slice.Start)))
			case "slice-state":
				return h.sliceState()
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}

func atoi(t *testing.T, d *datadriven.TestData, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return n
}

func flt(t *testing.T, d *datadriven.TestData, s string) float64 {
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return x
}

func dur(t *testing.T, d *datadriven.TestData, s string) time.Duration {
	x, err := time.ParseDuration(strings.TrimPrefix(s, "+"))
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	return x
}
