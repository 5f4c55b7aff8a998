package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteTable writes r as an aligned terminal table: a heading with the totals, the contributors
// (by payout) and the rounds.
func WriteTable(w io.Writer, r Report) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "cohort %d: %s (proposal %d), %s, round %d of %d, %d members\n", r.Cohort, orDash(r.Name), r.Proposal,
		orDash(r.Status), r.CurrentRound, r.PlannedRounds, r.Members)
	fmt.Fprintf(ew, "model %s on %s, codec %s\n", orDash(r.Model), orDash(r.Dataset), orDash(r.Codec))
	t := r.Totals
	fmt.Fprintf(ew, "pool %d: paid %d (%s) in %d scored rounds, remaining %d (carry %d)\n", t.Pool, t.Paid,
		pct(percent(t.Paid, t.Pool)), t.RoundsScored, t.Remaining, t.Carry)
	if ew.err != nil {
		return fmt.Errorf("report: write table: %w", ew.err)
	}

	fmt.Fprintln(ew, "\ncontributors")
	tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTRIBUTOR\tMEMBER\tSAMPLES\tROUNDS\tINFLUENCE\tPAYOUT\tDATA\tCOMPUTE\tSHARE\tOF POOL\tFLAGS")
	if len(r.Contributors) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	for _, c := range r.Contributors {
		flags := "-"
		if len(c.Flags) > 0 {
			flags = Escape(strings.Join(c.Flags, "; "))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", orDash(c.Name), orDash(shortID(c.Member)), c.Samples, c.Rounds,
			influence(c.Influence), c.Payout, c.Data, c.Compute, pct(c.SharePaid), pct(c.SharePool), flags)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("report: write table: %w", err)
	}

	fmt.Fprintln(ew, "\nrounds")
	tw = tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUND\tSTATUS\tPARTICIPANTS\tRECEIPTS\tSENT\tVAL LOSS\tVAL ACC\tBUDGET\tPAID\tNOTE")
	if len(r.Rounds) == 0 {
		fmt.Fprintln(tw, "(none)")
	}
	for _, rr := range r.Rounds {
		loss, acc, budget, paid := "-", "-", "-", "-"
		if rr.ValLoss != nil {
			loss = strconv.FormatFloat(*rr.ValLoss, 'f', 4, 64)
		}
		if rr.ValAccuracy != nil {
			acc = pct(100 * *rr.ValAccuracy)
		}
		if rr.Scored {
			budget, paid = strconv.FormatUint(rr.Budget, 10), strconv.FormatUint(rr.Paid, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", rr.Number, orDash(rr.Status), rr.Participants, rr.Receipts,
			Bytes(rr.BytesSent), loss, acc, budget, paid, orDash(rr.Note))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("report: write table: %w", err)
	}
	if ew.err != nil {
		return fmt.Errorf("report: write table: %w", ew.err)
	}
	return nil
}

// WriteJSON writes r as one indented JSON object (field names as tagged on Report).
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("report: write JSON: %w", err)
	}
	return nil
}

// ContributorsCSVHeader is the header row of WriteCSV.
var ContributorsCSVHeader = []string{"contributor", "member", "samples", "rounds", "influence", "payout", "data", "compute",
	"share_of_paid_pct", "share_of_pool_pct", "duplicate_of", "flags"}

// WriteCSV writes the contributors of r, one row each (header ContributorsCSVHeader); flags are
// joined with "; ".
func WriteCSV(w io.Writer, r Report) error {
	rows := [][]string{ContributorsCSVHeader}
	for _, c := range r.Contributors {
		rows = append(rows, []string{CSVText(c.Name), CSVText(c.Member), u(c.Samples), strconv.Itoa(c.Rounds), f(c.Influence, -1), u(c.Payout),
			u(c.Data), u(c.Compute), fixed(c.SharePaid), fixed(c.SharePool), CSVText(c.DuplicateOf), CSVText(strings.Join(c.Flags, "; "))})
	}
	return writeCSV(w, rows)
}

// RoundsCSVHeader is the header row of WriteRoundsCSV.
var RoundsCSVHeader = []string{"round", "status", "participants", "receipts", "samples_used", "bytes_sent", "val_loss",
	"val_accuracy", "scored", "budget", "paid", "flags", "note"}

// WriteRoundsCSV writes the rounds of r, one row each (header RoundsCSVHeader); unmeasured loss
// and accuracy are empty.
func WriteRoundsCSV(w io.Writer, r Report) error {
	rows := [][]string{RoundsCSVHeader}
	for _, rr := range r.Rounds {
		loss, acc := "", ""
		if rr.ValLoss != nil {
			loss = f(*rr.ValLoss, -1)
		}
		if rr.ValAccuracy != nil {
			acc = f(*rr.ValAccuracy, -1)
		}
		rows = append(rows, []string{strconv.FormatUint(uint64(rr.Number), 10), CSVText(rr.Status), strconv.Itoa(rr.Participants),
			strconv.Itoa(rr.Receipts), u(rr.SamplesUsed), u(rr.BytesSent), loss, acc, strconv.FormatBool(rr.Scored),
			u(rr.Budget), u(rr.Paid), strconv.Itoa(rr.Flags), CSVText(rr.Note)})
	}
	return writeCSV(w, rows)
}

func writeCSV(w io.Writer, rows [][]string) error {
	cw := csv.NewWriter(w)
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("report: write CSV: %w", err)
	}
	return nil
}

// Bytes formats a byte count with a binary unit: "512 B", "1.5 KiB", "12.3 MiB".
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func pct(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + "%" }

func influence(x float64) string {
	if x == 0 {
		return "0"
	}
	return strconv.FormatFloat(x, 'g', 4, 64)
}

func u(x uint64) string { return strconv.FormatUint(x, 10) }

func f(x float64, prec int) string { return strconv.FormatFloat(x, 'g', prec, 64) }

func fixed(x float64) string { return strconv.FormatFloat(x, 'f', 4, 64) }

// orDash is a table cell: s escaped (Escape), or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return Escape(s)
}

// shortID shortens a member ID (32 hex digits) to its first 8 for the table.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// errWriter remembers the first write error so a sequence of Fprintf calls is checked once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
