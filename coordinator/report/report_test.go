package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cohortlab/cohort/consensus"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	memAlice = "a11ce000000000000000000000000001"
	memBob   = "b0b00000000000000000000000000002"
	memDave  = "da7e0000000000000000000000000003"
)

// fixture is a cohort of three members four rounds in: alice's data is good, bob speaks for bob
// and carol, dave registered a copy of alice's data and sends replayed updates.
func fixture() (consensus.Proposal, consensus.Cohort, []consensus.Round, consensus.Ledger) {
	p := consensus.Proposal{ID: 7, Name: "fmnist-mlp", Model: "mlp:784-256-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 50, Rounds: 10, Codec: "topk:0.01+q4"}, RewardPool: 1_000_000,
		Status: consensus.ProposalPassed, Cohort: 1}
	c := consensus.Cohort{ID: 1, Proposal: 7, Status: consensus.CohortRunning, CurrentRound: 4, Members: []consensus.CohortMember{
		{Member: memAlice, Order: 1, Contributors: []consensus.ContributorData{{Name: "alice", Samples: 6000}}},
		{Member: memBob, Order: 2, Contributors: []consensus.ContributorData{{Name: "bob", Samples: 4000}, {Name: "carol", Samples: 2000}}},
		{Member: memDave, Order: 3, Contributors: []consensus.ContributorData{{Name: "dave", Samples: 6000, DuplicateOf: "alice"}}},
	}}
	receipts := func(ms ...string) []consensus.Receipt {
		var out []consensus.Receipt
		for i, m := range ms {
			out = append(out, consensus.Receipt{Member: m, SamplesUsed: 1600, BytesSent: uint64(400_000 + 1000*i)})
		}
		return out
	}
	all := []string{memAlice, memBob, memDave}
	rounds := []consensus.Round{
		// Out of order on purpose: Build sorts.
		{Cohort: 1, Number: 2, Participants: all, Receipts: receipts(all...), Status: consensus.RoundClosed,
			OpenedAt: 2000, Deadline: 62000, ClosedAt: 3000, Scored: true, Budget: 100_000, Paid: 100_000,
			Influence: []consensus.Influence{{Contributor: "alice", Value: 2_500_000}, {Contributor: "bob", Value: 1_000_000},
				{Contributor: "carol", Value: 500_000}, {Contributor: "dave", Value: -200_000}},
			Flags: []consensus.Flag{{Contributor: "dave", Kind: "duplicate", Detail: "duplicate of alice"},
				{Contributor: "dave", Kind: "negative-influence", Detail: "update raised the validation loss (-0.2)"}},
			Metrics: consensus.RoundMetrics{Measured: true, ValLossMicro: 812_345, ValAccuracyBP: 7123, Samples: 2000}},
		{Cohort: 1, Number: 1, Participants: all, Receipts: receipts(all...), Status: consensus.RoundClosed,
			OpenedAt: 1000, Deadline: 61000, ClosedAt: 1900, Scored: true, Budget: 100_000, Paid: 100_000,
			Influence: []consensus.Influence{{Contributor: "alice", Value: 4_000_000}, {Contributor: "bob", Value: 3_000_000},
				{Contributor: "carol", Value: 1_000_000}, {Contributor: "dave", Value: 0}},
			Flags: []consensus.Flag{{Contributor: "carol", Kind: "stale"}, {Contributor: "dave", Kind: "duplicate", Detail: "duplicate of alice"},
				{Contributor: "dave", Kind: "negative-influence", Detail: "update raised the validation loss (-0.1)"}},
			Metrics: consensus.RoundMetrics{Measured: true, ValLossMicro: 1_204_000, ValAccuracyBP: 6010, Samples: 2000}},
		{Cohort: 1, Number: 3, Participants: all, Receipts: receipts(memAlice, memBob), Status: consensus.RoundClosed,
			OpenedAt: 3100, Deadline: 63100, ClosedAt: 4000, Scored: true, Budget: 100_000, Paid: 0,
			ScoreNote: "no update lowered the validation loss"},
		{Cohort: 1, Number: 4, Participants: all, Receipts: receipts(memBob), Status: consensus.RoundOpen,
			OpenedAt: 4100, Deadline: 64100},
	}
	l := consensus.Ledger{
		Pools: []consensus.Pool{
			{Cohort: 1, Total: 1_000_000, Rounds: 10, Paid: 200_000, Carry: 100_000, LastScored: 3, RoundsPaid: 3, DataBP: 8000, ComputeBP: 2000},
			{Cohort: 2, Total: 50, Rounds: 1, Paid: 50},
		},
		Payouts: []consensus.Payout{
			{Cohort: 1, Round: 1, Contributor: "alice", Data: 40_000, Compute: 8_000},
			{Cohort: 1, Round: 1, Contributor: "bob", Data: 30_000, Compute: 4_000},
			{Cohort: 1, Round: 1, Contributor: "carol", Data: 10_000, Compute: 4_000},
			{Cohort: 1, Round: 1, Contributor: "dave", Compute: 4_000},
			{Cohort: 2, Round: 1, Contributor: "alice", Data: 50}, // another cohort: ignored
			{Cohort: 1, Round: 2, Contributor: "alice", Data: 50_000, Compute: 8_000},
			{Cohort: 1, Round: 2, Contributor: "bob", Data: 20_000, Compute: 4_000},
			{Cohort: 1, Round: 2, Contributor: "carol", Data: 10_000, Compute: 4_000},
			{Cohort: 1, Round: 2, Contributor: "dave", Compute: 4_000},
		},
	}
	return p, c, rounds, l
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestBuild(t *testing.T) {
	r := Build(fixture())
	if got := len(r.Contributors); got != 4 {
		t.Fatalf("%d contributors, want 4", got)
	}
	var order []string
	for _, c := range r.Contributors {
		order = append(order, c.Name)
	}
	if strings.Join(order, ",") != "alice,bob,carol,dave" {
		t.Errorf("order %v, want by payout", order)
	}
	a, d := r.Contributors[0], r.Contributors[3]
	if a.Payout != 106_000 || a.Data != 90_000 || a.Compute != 16_000 || a.Rounds != 4-1 || a.Samples != 6000 || a.Member != memAlice {
		t.Errorf("alice: %+v", a)
	}
	if math.Abs(a.Influence-0.0065) > 1e-12 || math.Abs(a.SharePaid-53) > 1e-9 || math.Abs(a.SharePool-10.6) > 1e-9 {
		t.Errorf("alice influence %v, shares %v %v", a.Influence, a.SharePaid, a.SharePool)
	}
	wantFlags := []string{"duplicate of alice (registered)", "duplicate of alice (2 rounds)",
		"negative-influence (2 rounds; last: update raised the validation loss (-0.2))"}
	if strings.Join(d.Flags, "|") != strings.Join(wantFlags, "|") {
		t.Errorf("dave flags %q, want %q", d.Flags, wantFlags)
	}
	if c := r.Contributors[2]; len(c.Flags) != 1 || c.Flags[0] != "stale (1 round)" {
		t.Errorf("carol flags %q", c.Flags)
	}
	if r.Totals != (Totals{Pool: 1_000_000, Paid: 200_000, Remaining: 800_000, Carry: 100_000, RoundsScored: 3, Samples: 18000,
		BytesSent: 3*400_000 + 3000 + 3*400_000 + 3000 + 2*400_000 + 1000 + 400_000}) {
		t.Errorf("totals %+v", r.Totals)
	}
	if r.Rounds[0].Number != 1 || r.Rounds[2].ValLoss != nil || *r.Rounds[1].ValLoss != 0.812345 || *r.Rounds[1].ValAccuracy != 0.7123 {
		t.Errorf("rounds %+v", r.Rounds)
	}
	var sum float64
	for _, c := range r.Contributors {
		sum += c.SharePaid
	}
	if math.Abs(sum-100) > 1e-9 {
		t.Errorf("shares of paid sum to %v", sum)
	}
	sh := r.CumulativeShares()
	if got := sh["alice"]; len(got) != 4 || math.Abs(got[0]-48) > 1e-9 || math.Abs(got[3]-53) > 1e-9 {
		t.Errorf("alice cumulative shares %v", got)
	}
}

func TestGoldenTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, Build(fixture())); err != nil {
		t.Fatal(err)
	}
	golden(t, "table.txt", b.Bytes())
}

func TestGoldenJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, Build(fixture())); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.json", b.Bytes())
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not read back: %v", err)
	}
}

func TestGoldenCSV(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCSV(&b, Build(fixture())); err != nil {
		t.Fatal(err)
	}
	golden(t, "contributors.csv", b.Bytes())
	b.Reset()
	if err := WriteRoundsCSV(&b, Build(fixture())); err != nil {
		t.Fatal(err)
	}
	golden(t, "rounds.csv", b.Bytes())
}

// edgeCases are reports with little in them: each must render everywhere without NaN or panic.
func edgeCases() map[string]Report {
	p, c, rounds, l := fixture()
	unmeasured := make([]consensus.Round, len(rounds))
	for i, r := range rounds {
		r.Metrics = consensus.RoundMetrics{}
		unmeasured[i] = r
	}
	forming := c
	forming.Status, forming.CurrentRound = consensus.CohortForming, 0
	zeroPool := p
	zeroPool.RewardPool = 0
	return map[string]Report{
		"empty":          Build(consensus.Proposal{}, consensus.Cohort{}, nil, consensus.Ledger{}),
		"no rounds":      Build(p, forming, nil, consensus.Ledger{}),
		"no payouts":     Build(p, c, rounds, consensus.Ledger{}),
		"zero pool":      Build(zeroPool, c, rounds[3:], consensus.Ledger{}),
		"unmeasured":     Build(p, c, unmeasured, l),
		"other cohort":   Build(p, c, rounds, consensus.Ledger{Payouts: l.Payouts[4:5], Pools: l.Pools[1:]}),
		"strange names":  strangeNames(),
		"many paid ones": manyContributors(20),
	}
}

func strangeNames() Report {
	c := consensus.Cohort{ID: 3, Members: []consensus.CohortMember{{Member: "m", Contributors: []consensus.ContributorData{
		{Name: "<script>alert(1)</script>", Samples: 1}, {Name: "tab\there\nnewline & \"quotes\"", Samples: 2}}}}}
	rounds := []consensus.Round{{Cohort: 3, Number: 1, Status: consensus.RoundClosed, Scored: true, Budget: 10, Paid: 10,
		Flags:     []consensus.Flag{{Contributor: "<script>alert(1)</script>", Kind: "odd", Detail: "</svg><b>"}},
		ScoreNote: "a <note> & more"}}
	l := consensus.Ledger{Payouts: []consensus.Payout{{Cohort: 3, Round: 1, Contributor: "<script>alert(1)</script>", Data: 10}}}
	return Build(consensus.Proposal{Name: "<i>name</i>", RewardPool: 10}, c, rounds, l)
}

func manyContributors(n int) Report {
	c := consensus.Cohort{ID: 1, Status: consensus.CohortDone, CurrentRound: 2}
	var payouts []consensus.Payout
	for i := 0; i < n; i++ {
		name := string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		c.Members = append(c.Members, consensus.CohortMember{Member: name, Contributors: []consensus.ContributorData{{Name: name, Samples: 10}}})
		for r := uint32(1); r <= 2; r++ {
			payouts = append(payouts, consensus.Payout{Cohort: 1, Round: r, Contributor: name, Data: uint64(i + 1)})
		}
	}
	rounds := []consensus.Round{{Cohort: 1, Number: 1, Status: consensus.RoundClosed}, {Cohort: 1, Number: 2, Status: consensus.RoundClosed}}
	return Build(consensus.Proposal{Params: consensus.Hyperparams{Rounds: 2}, RewardPool: 1000}, c, rounds, consensus.Ledger{Payouts: payouts})
}

func TestEdgeCasesRender(t *testing.T) {
	for name, r := range edgeCases() {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			for _, w := range []func(io.Writer, Report) error{WriteTable, WriteJSON, WriteCSV, WriteRoundsCSV} {
				if err := w(&b, r); err != nil {
					t.Fatal(err)
				}
			}
			if s := b.String(); strings.Contains(s, "NaN") || strings.Contains(s, "Inf") {
				t.Errorf("output has NaN or Inf:\n%s", s)
			}
			for _, svg := range []func(Report) ([]byte, error){LossSVG, SharesSVG} {
				out, err := svg(r)
				if err != nil {
					t.Fatal(err)
				}
				checkSVG(t, out)
				if bytes.Contains(out, []byte("NaN")) {
					t.Errorf("SVG has NaN")
				}
			}
		})
	}
}

func TestTableHasNoControlCharacters(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, strangeNames()); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if strings.ContainsAny(line, "\t\r") {
			t.Errorf("line %q has a control character", line)
		}
	}
	if !strings.Contains(b.String(), `tab\x09here\x0anewline`) {
		t.Errorf("control characters not escaped:\n%s", b.String())
	}
	b.Reset()
	if err := WriteCSV(&b, strangeNames()); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil || len(rows) != 3 || rows[2][0] != "tab\there\nnewline & \"quotes\"" {
		t.Fatalf("CSV does not read back: %v %q", err, rows)
	}
}

// hostileNames is a cohort whose members chose names to attack whoever reads the report: a
// terminal title change and a colour escape, a bidi override that reverses what follows, a
// zero-width joiner, a backslash posing as an escape, bytes that are not UTF-8, and spreadsheet
// formulas (= + - @, and a leading TAB or CR).
func hostileNames() Report {
	names := []string{"\x1b]0;owned\x07eve", "\x1b[31mred\x1b[0m", "good\u202egnp.exe", "zero\u200dwidth", `not\x1b`,
		"bad\xffutf8", "=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tcell", "\rcell", "plain-name"}
	const member = "m0000000000000000000000000000001"
	var ds []consensus.ContributorData
	for i, n := range names {
		ds = append(ds, consensus.ContributorData{Name: consensus.ContributorKey(member, n), Samples: uint64(i + 1)})
	}
	c := consensus.Cohort{ID: 5, Status: consensus.CohortRunning, CurrentRound: 1,
		Members: []consensus.CohortMember{{Member: member, Contributors: ds}}}
	eve := consensus.ContributorKey(member, names[0])
	rounds := []consensus.Round{{Cohort: 5, Number: 1, Status: consensus.RoundClosed, Scored: true, Budget: 10, Paid: 10,
		Flags:     []consensus.Flag{{Contributor: eve, Kind: "odd", Detail: "=cmd|' /C calc'!A0"}},
		ScoreNote: "-note\x1b[2J"}}
	l := consensus.Ledger{Payouts: []consensus.Payout{{Cohort: 5, Round: 1, Contributor: eve, Data: 10}}}
	return Build(consensus.Proposal{Name: "\x1b]0;title\x07cohort", Model: "mlp\u202e", Dataset: "=1+1", RewardPool: 10,
		Params: consensus.Hyperparams{Rounds: 2, Codec: "q8\x1b[K"}}, c, rounds, l)
}

// TestGoldenHostileNames: in the table every control and format character of a name is shown
// escaped (\x1b, \u202e, ...) and a backslash doubled; in CSV a cell a spreadsheet would read as
// a formula starts with ', and escapes are shown as in the table (TAB, CR and LF stay, quoted).
func TestGoldenHostileNames(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, hostileNames()); err != nil {
		t.Fatal(err)
	}
	golden(t, "hostile_table.txt", b.Bytes())
	if bytes.ContainsAny(b.Bytes(), "\x1b\x07\r\t") || bytes.Contains(b.Bytes(), []byte("\u202e")) || !utf8.Valid(b.Bytes()) {
		t.Errorf("the table carries a raw control or format character:\n%q", b.String())
	}
	for _, want := range []string{`\x1b]0;owned\x07eve`, `good\u202egnp.exe`, `zero\u200dwidth`, `not\\x1b`, `bad\xffutf8`, `\x09cell`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %s", want)
		}
	}
	for name, write := range map[string]func(io.Writer, Report) error{"hostile_contributors.csv": WriteCSV, "hostile_rounds.csv": WriteRoundsCSV} {
		b.Reset()
		if err := write(&b, hostileNames()); err != nil {
			t.Fatal(err)
		}
		golden(t, name, b.Bytes())
		if bytes.ContainsAny(b.Bytes(), "\x1b\x07") || bytes.Contains(b.Bytes(), []byte("\u202e")) {
			t.Errorf("%s carries a raw escape:\n%q", name, b.String())
		}
		rows, err := csv.NewReader(bytes.NewReader(b.Bytes())).ReadAll()
		if err != nil {
			t.Fatalf("%s does not read back: %v", name, err)
		}
		for _, row := range rows[1:] {
			for _, cell := range row {
				if _, err := strconv.ParseFloat(cell, 64); err == nil {
					continue // a number, written as it is
				}
				if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
					t.Errorf("%s: cell %q starts a formula", name, cell)
				}
			}
		}
	}
}

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, table, csv string }{
		{"alice", "alice", "alice"},
		{"Zoë 日本", "Zoë 日本", "Zoë 日本"},
		{"\x1b[31m", `\x1b[31m`, `\x1b[31m`},
		{"a\tb\nc", `a\x09b\x0ac`, "a\tb\nc"},
		{"\u202e\u2066\ufeff\u00ad", `\u202e\u2066\ufeff\u00ad`, `\u202e\u2066\ufeff\u00ad`},
		{"\u0085\u2028", `\u0085\u2028`, `\u0085\u2028`},
		{"\U000e0041", `\U000e0041`, `\U000e0041`}, // a tag character (format)
		{`a\b`, `a\\b`, `a\b`},
		{"\xff\xfe", `\xff\xfe`, `\xff\xfe`},
		{"=1+1", "=1+1", "'=1+1"},
		{"+1", "+1", "'+1"},
		{"-1", "-1", "'-1"},
		{"@x", "@x", "'@x"},
		{"\tx", `\x09x`, "'\tx"},
		{"\rx", `\x0dx`, "'\rx"},
		{"a=b", "a=b", "a=b"},
		{"", "", ""},
	} {
		if got := Escape(tc.in); got != tc.table {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.table)
		}
		if got := CSVText(tc.in); got != tc.csv {
			t.Errorf("CSVText(%q) = %q, want %q", tc.in, got, tc.csv)
		}
	}
}

func TestWritePlots(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plots")
	paths, err := WritePlots(dir, Build(fixture()))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || filepath.Base(paths[0]) != "loss.svg" || filepath.Base(paths[1]) != "shares.svg" {
		t.Fatalf("paths %v", paths)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		checkSVG(t, b)
	}
	shares, _ := os.ReadFile(paths[1])
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		if !bytes.Contains(shares, []byte(">"+name+"<")) {
			t.Errorf("shares.svg has no legend entry for %s", name)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (no temporary files left)", len(entries))
	}
}

func TestSharesSVGGroupsOthers(t *testing.T) {
	b, err := SharesSVG(manyContributors(20))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(">12 others<")) {
		t.Errorf("no \"12 others\" legend entry")
	}
}

// checkSVG parses b as XML and checks that its root element is <svg>.
func checkSVG(t *testing.T, b []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse as XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
}
