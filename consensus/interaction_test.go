package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/cockroachdb/datadriven"
	"github.com/hashicorp/raft"
)

// interaction is the datadriven harness: it keeps a State, a clock and per-name request counters,
// and prints results with member IDs replaced by names.
type interaction struct {
	s     *State
	now   int64
	seq   map[string]uint64
	names map[string]string // id -> name
	last  *Command
	// collect, when set, receives the signed commands instead of applying them (batch).
	collect *[]Command
}

func newInteraction() *interaction {
	return &interaction{s: NewState(), now: 1_000_000, seq: map[string]uint64{}, names: map[string]string{}}
}

func (it *interaction) name(n string) string {
	it.names[testID(n)] = n
	return n
}

func (it *interaction) id(n string) string { it.name(n); return testID(n) }

func (it *interaction) readable(s string) string {
	ids := make([]string, 0, len(it.names))
	for id := range it.names {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s = strings.ReplaceAll(s, id, it.names[id])
	}
	return s
}

func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata/interaction", func(t *testing.T, path string) {
		it := newInteraction()
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			return it.readable(it.handle(t, td))
		})
	})
}

func argStr(t *testing.T, td *datadriven.TestData, key, def string) string {
	if a, ok := td.Arg(key); ok {
		if len(a.Vals) == 0 {
			return ""
		}
		return a.Vals[0]
	}
	return def
}

func argList(td *datadriven.TestData, key string) []string {
	if a, ok := td.Arg(key); ok {
		return a.Vals
	}
	return nil
}

func argU64(t *testing.T, td *datadriven.TestData, key string, def uint64) uint64 {
	s := argStr(t, td, key, "")
	if s == "" {
		return def
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		td.Fatalf(t, "%s=%q: %v", key, s, err)
	}
	return v
}

func argI64(t *testing.T, td *datadriven.TestData, key string, def int64) int64 {
	s := argStr(t, td, key, "")
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		td.Fatalf(t, "%s=%q: %v", key, s, err)
	}
	return v
}

// contributor turns a script's contributor into its ledger key: "member/name" names it in full;
// a bare name is the one contributor of that name registered, if exactly one is (else it stays
// as written, to be refused).
func (it *interaction) contributor(n string) string {
	if m, local, ok := strings.Cut(n, "/"); ok {
		return ContributorKey(it.id(m), local)
	}
	var found []string
	for _, kv := range it.s.Contributors() {
		if ContributorName(kv[0]) == n {
			found = append(found, kv[0])
		}
	}
	if len(found) == 1 {
		return found[0]
	}
	return n
}

// unescape reads Go escapes (\x1b, \u202e) in a script argument, so scripts can spell bytes
// datadriven cannot carry.
func unescape(t *testing.T, td *datadriven.TestData, s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	u, err := strconv.Unquote(`"` + s + `"`)
	if err != nil {
		td.Fatalf(t, "%q: %v", s, err)
	}
	return u
}

// hash turns a short label into hash bytes ("" stays empty).
func hash(label string) []byte {
	if label == "" {
		return nil
	}
	return []byte("h:" + label)
}

func (it *interaction) handle(t *testing.T, td *datadriven.TestData) string {
	by := argStr(t, td, "by", "")
	if by != "" {
		it.name(by)
	}
	var body Body
	switch td.Cmd {
	case "batch":
		return it.batch(t, td)
	case "tick":
		it.now += argI64(t, td, "ms", 0)
		return fmt.Sprintf("now=%d", it.now)
	case "coordinator":
		// Self-signed by `by` for the key of `key` (default by) under `name` (default key); the
		// bootstrap names the other initial voters in initial=(...).
		key := argStr(t, td, "key", by)
		var initial []ApprovedCoordinator
		for _, n := range argList(td, "initial") {
			initial = append(initial, ApprovedCoordinator{ID: it.id(n), Name: n})
		}
		body = &AddCoordinatorBody{PublicKey: testPub(it.name(key)), Name: unescape(t, td, argStr(t, td, "name", key)), Initial: initial}
	case "approve":
		key := argStr(t, td, "key", "")
		body = &ApproveCoordinatorBody{ID: it.id(key), Name: argStr(t, td, "name", key), Remove: td.HasArg("remove")}
	case "coordinators":
		var b strings.Builder
		for _, c := range it.s.Coordinators() {
			fmt.Fprintf(&b, "coordinator %s name=%s\n", c.ID, c.Name)
		}
		for _, a := range it.s.Approved() {
			fmt.Fprintf(&b, "approved %s name=%s\n", a.ID, a.Name)
		}
		for _, m := range it.s.Motions() {
			fmt.Fprintf(&b, "motion %s by=%v\n", m.Type, m.By)
		}
		return b.String()
	case "register":
		var cs []string
		for _, c := range argList(td, "contributors") {
			cs = append(cs, unescape(t, td, c))
		}
		body = &RegisterBody{PublicKey: testPub(by), Name: unescape(t, td, argStr(t, td, "name", by)), Contributors: cs}
	case "propose":
		body = &ProposeBody{Name: unescape(t, td, argStr(t, td, "name", "p")), Model: argStr(t, td, "model", "mlp:784-256-10"),
			Dataset: argStr(t, td, "dataset", "fashion-mnist"), ValidationHash: hash(argStr(t, td, "valhash", "val")),
			Params: Hyperparams{InnerSteps: uint32(argU64(t, td, "inner", 50)), Rounds: uint32(argU64(t, td, "rounds", 3)),
				Codec: argStr(t, td, "codec", "topk:0.05+int8"), OuterLR: "0.7", OuterMomentum: "0.9",
				DownCodec: argStr(t, td, "down", "")},
			RewardPool: argU64(t, td, "pool", 1000), MinMembers: uint32(argU64(t, td, "min", 1)),
			QuorumBP: uint32(argU64(t, td, "quorum", 5000)), ThresholdBP: uint32(argU64(t, td, "threshold", 5000)),
			VotingPeriodMs: argI64(t, td, "period", 1000), MaxMembers: uint32(argU64(t, td, "max", 0))}
	case "set-limits":
		// Arguments name Limits fields (e.g. MaxMembers=3); the others keep their defaults.
		var l Limits
		v := reflect.ValueOf(&l).Elem()
		for _, a := range td.CmdArgs {
			if a.Key == "by" || a.Key == "req" {
				continue
			}
			f := v.FieldByName(a.Key)
			if !f.IsValid() || len(a.Vals) != 1 {
				td.Fatalf(t, "set-limits: unknown limit %q", a.Key)
			}
			if f.CanUint() {
				x, err := strconv.ParseUint(a.Vals[0], 10, 64)
				if err != nil {
					td.Fatalf(t, "%s: %v", a.Key, err)
				}
				f.SetUint(x)
			} else {
				x, err := strconv.ParseInt(a.Vals[0], 10, 64)
				if err != nil {
					td.Fatalf(t, "%s: %v", a.Key, err)
				}
				f.SetInt(x)
			}
		}
		body = &SetLimitsBody{Limits: l}
	case "fund":
		body = &FundBody{Amount: argU64(t, td, "amount", 0)}
	case "grant":
		var more []string
		for _, m := range argList(td, "more") {
			more = append(more, it.id(m))
		}
		if !td.HasArg("unsorted") {
			sort.Strings(more) // IDs are key hashes: the script names members, the command sorts them
		} else {
			sort.Sort(sort.Reverse(sort.StringSlice(more)))
		}
		body = &GrantBody{Member: it.id(argStr(t, td, "member", "")), Votes: argU64(t, td, "votes", 1), More: more}
	case "vote":
		body = &VoteBody{Proposal: argU64(t, td, "proposal", 1), Yes: td.HasArg("yes")}
	case "tally":
		body = &TallyBody{Proposal: argU64(t, td, "proposal", 1)}
	case "join":
		var cds []ContributorData
		for _, v := range argList(td, "data") {
			f := strings.Split(v, ":")
			if len(f) != 3 {
				td.Fatalf(t, "data %q: want name:fingerprint:samples", v)
			}
			n, _ := strconv.ParseUint(f[2], 10, 64)
			cds = append(cds, ContributorData{Name: f[0], Fingerprint: []byte(f[1]), Samples: n})
		}
		body = &JoinBody{Cohort: argU64(t, td, "cohort", 1), Contributors: cds}
	case "open-round":
		var parts []string
		for _, p := range argList(td, "participants") {
			parts = append(parts, it.id(p))
		}
		sort.Strings(parts)
		var slices []SliceAssignment
		for _, v := range argList(td, "slices") {
			var a, b uint64
			var agg string
			rng, agg, _ := strings.Cut(v, ":")
			lo, hi, _ := strings.Cut(rng, "-")
			a, _ = strconv.ParseUint(lo, 10, 64)
			b, _ = strconv.ParseUint(hi, 10, 64)
			slices = append(slices, SliceAssignment{Start: a, End: b, Aggregator: it.id(agg)})
		}
		body = &OpenRoundBody{Cohort: argU64(t, td, "cohort", 1), Number: uint32(argU64(t, td, "round", 1)),
			Participants: parts, Slices: slices, ModelHash: hash(argStr(t, td, "hash", "")),
			Seed: argU64(t, td, "seed", 0), Deadline: it.now + argI64(t, td, "deadline", 1000)}
	case "receipt":
		body = &ReceiptBody{Cohort: argU64(t, td, "cohort", 1), Round: uint32(argU64(t, td, "round", 1)),
			SamplesUsed: argU64(t, td, "samples", 0), BytesSent: argU64(t, td, "bytes", 0),
			ModelHashAfter: hash(argStr(t, td, "hash", ""))}
	case "score":
		parse := func(key string) []Weight {
			var ws []Weight
			for _, v := range argList(td, key) {
				n, w, _ := strings.Cut(v, ":")
				x, err := strconv.ParseUint(w, 10, 64)
				if err != nil {
					td.Fatalf(t, "%s %q: %v", key, v, err)
				}
				ws = append(ws, Weight{Contributor: it.contributor(n), Weight: x})
			}
			return ws
		}
		var infl []Influence
		for _, v := range argList(td, "influence") {
			n, w, _ := strings.Cut(v, ":")
			x, err := strconv.ParseInt(w, 10, 64)
			if err != nil {
				td.Fatalf(t, "influence %q: %v", v, err)
			}
			infl = append(infl, Influence{Contributor: it.contributor(n), Value: x})
		}
		var flags []Flag
		for _, v := range argList(td, "flags") {
			n, k, _ := strings.Cut(v, ":")
			flags = append(flags, Flag{Contributor: it.contributor(n), Kind: k})
		}
		body = &ScoreCommitBody{Cohort: argU64(t, td, "cohort", 1), Round: uint32(argU64(t, td, "round", 1)),
			Data: parse("data"), Compute: parse("compute"), Influence: infl, Flags: flags,
			Metrics: RoundMetrics{Measured: argU64(t, td, "loss", 0) > 0, ValLossMicro: argU64(t, td, "loss", 0)}}
	case "reassign":
		body = &ReassignBody{Cohort: argU64(t, td, "cohort", 1), Round: uint32(argU64(t, td, "round", 1)),
			Slice: uint32(argU64(t, td, "slice", 0)), Aggregator: it.id(argStr(t, td, "to", "")),
			Deadline: it.now + argI64(t, td, "deadline", 1000)}
	case "extend-round":
		body = &ExtendRoundBody{Cohort: argU64(t, td, "cohort", 1), Round: uint32(argU64(t, td, "round", 1)),
			Deadline: it.now + argI64(t, td, "deadline", 1000)}
	case "close-round":
		body = &CloseRoundBody{Cohort: argU64(t, td, "cohort", 1), Round: uint32(argU64(t, td, "round", 1)),
			ModelHash: hash(argStr(t, td, "hash", ""))}
	case "replay":
		if it.last == nil {
			td.Fatalf(t, "replay: no previous command")
		}
		c := *it.last
		c.Time = it.now
		return it.apply(c)
	case "snapshot-restore":
		b, err := it.s.MarshalSnapshot()
		if err != nil {
			return "error: " + err.Error()
		}
		r, err := UnmarshalSnapshot(b)
		if err != nil {
			return "error: " + err.Error()
		}
		h1, h2 := it.s.Hash(), r.Hash()
		it.s = r
		if h1 != h2 {
			return fmt.Sprintf("hash mismatch %x != %x", h1[:8], h2[:8])
		}
		return "hash equal after restore"
	case "ledger":
		return it.ledger()
	case "proposal":
		p, err := it.s.Proposal(argU64(t, td, "id", 1))
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		fmt.Fprintf(&b, "proposal %d %q by %s: %s deadline=%d eligible=%d yes=%d no=%d cohort=%d\n", p.ID, p.Name,
			p.Proposer, p.Status, p.Deadline, p.EligibleWeight, p.YesWeight, p.NoWeight, p.Cohort)
		if p.Reason != "" {
			fmt.Fprintf(&b, "  reason: %s\n", p.Reason)
		}
		for _, v := range p.Votes {
			fmt.Fprintf(&b, "  %s yes=%v weight=%d\n", v.Member, v.Yes, v.Weight)
		}
		return b.String()
	case "cohort":
		c, err := it.s.Cohort(argU64(t, td, "id", 1))
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		fmt.Fprintf(&b, "cohort %d (proposal %d): %s round=%d model=%s\n", c.ID, c.Proposal, c.Status, c.CurrentRound, c.ModelHash)
		for _, m := range c.Members {
			fmt.Fprintf(&b, "  #%d %s:", m.Order, m.Member)
			for _, d := range m.Contributors {
				fmt.Fprintf(&b, " %s(%s,%d", d.Name, d.Fingerprint, d.Samples)
				if d.DuplicateOf != "" {
					fmt.Fprintf(&b, ",dup-of=%s", d.DuplicateOf)
				}
				b.WriteString(")")
			}
			b.WriteString("\n")
		}
		return b.String()
	case "round":
		r, err := it.s.Round(argU64(t, td, "cohort", 1), uint32(argU64(t, td, "round", 1)))
		if err != nil {
			return "error: " + err.Error()
		}
		var b strings.Builder
		fmt.Fprintf(&b, "round %d/%d: %s participants=%v model=%s new=%s deadline=%d seed=%d scored=%v budget=%d paid=%d\n",
			r.Cohort, r.Number, r.Status, r.Participants, r.ModelHash, r.NewModelHash, r.Deadline, r.Seed, r.Scored, r.Budget, r.Paid)
		for _, s := range r.Slices {
			fmt.Fprintf(&b, "  slice [%d,%d) -> %s\n", s.Start, s.End, s.Aggregator)
		}
		if r.Reassignments > 0 {
			fmt.Fprintf(&b, "  reassignments %d\n", r.Reassignments)
		}
		for _, rc := range r.Receipts {
			fmt.Fprintf(&b, "  receipt %s samples=%d bytes=%d after=%s", rc.Member, rc.SamplesUsed, rc.BytesSent, rc.ModelHashAfter)
			if rc.Claimed != rc.SamplesUsed {
				fmt.Fprintf(&b, " (claimed %d)", rc.Claimed)
			}
			b.WriteString("\n")
		}
		for _, x := range r.Influence {
			fmt.Fprintf(&b, "  influence %s %d\n", x.Contributor, x.Value)
		}
		for _, f := range r.Flags {
			fmt.Fprintf(&b, "  flag %s %s\n", f.Contributor, f.Kind)
		}
		if r.Metrics.Measured {
			fmt.Fprintf(&b, "  val-loss %d µ\n", r.Metrics.ValLossMicro)
		}
		return b.String()
	default:
		td.Fatalf(t, "unknown directive %q", td.Cmd)
	}

	// A command: sign it as `by`, with an explicit or the next request ID, then tamper if asked.
	req := argU64(t, td, "req", 0)
	if req == 0 {
		it.seq[by]++
		req = it.seq[by]
	} else if req > it.seq[by] {
		it.seq[by] = req
	}
	env := mustEnv(t, by, req, body)
	if as := argStr(t, td, "as", ""); as != "" { // claim another issuer, keep by's signature
		env.Issuer = it.id(as)
	}
	if td.HasArg("forge") {
		env.Sig[0] ^= 1
	}
	if td.HasArg("unsigned") {
		env.Sig = nil
	}
	c := Command{Version: Version, Time: it.now, Env: env}
	if l := argStr(t, td, "leader", ""); l != "" { // the leader that appends it
		c.Leader = it.id(l)
	}
	if it.collect != nil {
		*it.collect = append(*it.collect, c)
		return ""
	}
	return it.apply(c)
}

// batch signs the commands of its input, one directive a line, and applies them as one batch
// log entry through the raft adapter, stamped now and appended by leader=NAME (default none);
// it prints one numbered result a line.
func (it *interaction) batch(t *testing.T, td *datadriven.TestData) string {
	var cmds []Command
	it.collect = &cmds
	for i, line := range strings.Split(td.Input, "\n") {
		cmd, args, err := datadriven.ParseLine(line)
		if err != nil {
			td.Fatalf(t, "batch line %d: %v", i+1, err)
		}
		if cmd == "" {
			continue
		}
		n := len(cmds)
		it.handle(t, &datadriven.TestData{Pos: fmt.Sprintf("%s (batch line %d)", td.Pos, i+1), Cmd: cmd, CmdArgs: args})
		if len(cmds) != n+1 {
			td.Fatalf(t, "batch line %d: %q is not a command", i+1, cmd)
		}
	}
	it.collect = nil
	b := Batch{}
	if l := argStr(t, td, "leader", ""); l != "" {
		b.Leader = it.id(l)
	}
	for _, c := range cmds {
		b.Items = append(b.Items, BatchItem{Time: c.Time, Env: c.Env})
	}
	data, err := b.Marshal()
	if err != nil {
		return "error: " + err.Error()
	}
	if len(cmds) > 0 {
		last := b.Commands()[len(cmds)-1]
		it.last = &last
	}
	f := &fsm{state: it.s}
	out := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: data}})
	rs, ok := out[0].(batchResponse)
	if !ok {
		return fmt.Sprintf("error: response %v", out[0])
	}
	var w strings.Builder
	for i, r := range rs {
		fmt.Fprintf(&w, "%d %s\n", i+1, it.result(r.res, r.err))
	}
	return w.String()
}

func (it *interaction) apply(c Command) string {
	cc := c
	it.last = &cc
	res, err := it.s.Apply(c)
	return it.result(res, err)
}

// result prints a command's outcome.
func (it *interaction) result(res Result, err error) string {
	if err != nil {
		kind := "error"
		for _, s := range []error{ErrUnsigned, ErrBadSignature, ErrUnknownIssuer, ErrForbidden, ErrStaleRequest,
			ErrExists, ErrNotFound, ErrWrongStatus, ErrDeadline, ErrOverflow, ErrLimit, ErrInvalid, ErrDecode} {
			if errors.Is(err, s) {
				kind = strings.TrimPrefix(s.Error(), "consensus: ")
				break
			}
		}
		return fmt.Sprintf("error (%s): %v", kind, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "ok %s", res.Type)
	if res.Member != "" {
		fmt.Fprintf(&b, " member=%s", res.Member)
	}
	if res.ID != 0 {
		fmt.Fprintf(&b, " id=%d", res.ID)
	}
	if res.Cohort != 0 {
		fmt.Fprintf(&b, " cohort=%d", res.Cohort)
	}
	if res.Status != "" {
		fmt.Fprintf(&b, " status=%s", res.Status)
	}
	switch res.Type {
	case CmdScoreCommit:
		fmt.Fprintf(&b, " paid=%d", res.Amount)
	case CmdFund:
		fmt.Fprintf(&b, " treasury=%d", res.Amount)
	case CmdGrant:
		fmt.Fprintf(&b, " votes=%d", res.Amount)
	}
	if res.Duplicate {
		b.WriteString(" (duplicate)")
	}
	return b.String()
}

func (it *interaction) ledger() string {
	l := it.s.Ledger()
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "contributor\tbalance\t")
	var total uint64
	for _, bal := range l.Balances {
		fmt.Fprintf(w, "%s\t%d\t\n", it.readable(bal.Contributor), bal.Amount)
		total += bal.Amount
	}
	fmt.Fprintf(w, "total\t%d\t\n", total)
	w.Flush()
	w = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	tr := l.Treasury
	fmt.Fprintf(&b, "treasury balance=%d reserved=%d funded=%d\n", tr.Balance, tr.Reserved, tr.Funded)
	fmt.Fprintln(w, "cohort\tpool\tpaid\tremaining\tcarry\treturned\tlast-scored\t")
	for _, p := range l.Pools {
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p.Cohort, p.Total, p.Paid, p.Remaining(), p.Carry, p.Returned, p.LastScored)
	}
	w.Flush()
	w = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "cohort\tround\tcontributor\tdata\tcompute\t")
	for _, p := range l.Payouts {
		fmt.Fprintf(w, "%d\t%d\t%s\t%d\t%d\t\n", p.Cohort, p.Round, it.readable(p.Contributor), p.Data, p.Compute)
	}
	w.Flush()
	return b.String()
}
