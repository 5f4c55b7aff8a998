package main

import (
	"fmt"
	"github.com/cohortlab/cohort/client"
	"io"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/protocol"
)

// reportFormats are the values of `cohort report --format`.
var reportFormats = map[string]func(io.Writer, report.Report) error{
	"table": report.WriteTable, "json": report.WriteJSON, "csv": report.WriteCSV, "csv-rounds": report.WriteRoundsCSV,
}

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "contribution report of a cohort: per contributor samples, rounds, influence, payout; per round loss and bytes",
		Description: `Reads the cohort, its proposal, its rounds and the ledger from any coordinator and prints
   the report. --format csv prints the contributors, csv-rounds the rounds. --plot DIR also
   writes DIR/loss.svg (validation loss and accuracy over rounds) and DIR/shares.svg
   (cumulative payout share per contributor).`,
		Flags: append(clientFlags(false),
			&cli.Uint64Flag{Name: "cohort", Required: true, Usage: "cohort ID", EnvVars: envVars("cohort")},
			&cli.StringFlag{Name: "format", Value: "table", Usage: "table, json, csv (contributors) or csv-rounds", EnvVars: envVars("format")},
			&cli.StringFlag{Name: "plot", Usage: "directory to write loss.svg and shares.svg into", EnvVars: envVars("plot")},
		),
		Action: runReport,
	}
}

func runReport(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("report: unexpected argument %q", c.Args().First())
	}
	write, ok := reportFormats[c.String("format")]
	if !ok {
		return fmt.Errorf("report: --format %q: want table, json, csv or csv-rounds", c.String("format"))
	}
	id := c.Uint64("cohort")
	if id == 0 {
		return fmt.Errorf("report: --cohort must be a cohort ID (1 or more)")
	}
	cl, err := dialClient(c)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer cl.Close()
	r, err := fetchReport(c, cl, id)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if dir := c.String("plot"); dir != "" {
		paths, err := report.WritePlots(dir, r)
		if err != nil {
			return fmt.Errorf("report: --plot: %w", err)
		}
		slog.Info("wrote charts", "files", paths)
	}
	return write(c.App.Writer, r)
}

// maxListed bounds what a command reads of one list (rounds, payouts, proposals) page by page.
const maxListed = 1 << 22

// fetchReport queries the cohort, its proposal, its rounds and the ledger and builds the report.
func fetchReport(c *cli.Context, cl *client.Client, id uint64) (report.Report, error) {
	rec, err := fetchRecords(c, cl, id, false)
	if err != nil {
		return report.Report{}, err
	}
	return report.Build(rec.proposal, rec.cohort, rec.rounds, rec.ledger), nil
}

// cohortRecords are the replicated records of one cohort a report or an audit is made of.
type cohortRecords struct {
	proposal consensus.Proposal
	cohort   consensus.Cohort
	rounds   []consensus.Round
	ledger   consensus.Ledger
}

// fetchRecords queries the cohort, its proposal, its rounds and the ledger (linearizable: as
// the leader holds them, not a follower a moment behind).
func fetchRecords(c *cli.Context, cl *client.Client, id uint64, linearizable bool) (cohortRecords, error) {
	q := func(what string, id uint64) (protocol.QueryReply, error) {
		r, err := cl.Query(c.Context, protocol.Query{What: what, ID: id, Linearizable: linearizable})
		if err != nil {
			return r, fmt.Errorf("query %s: %w", what, err)
		}
		return r, nil
	}
	cr, err := q(protocol.QueryCohort, id)
	if err != nil {
		return cohortRecords{}, err
	}
	if cr.Cohort == nil {
		return cohortRecords{}, fmt.Errorf("cohort %d: empty answer", id)
	}
	pr, err := q(protocol.QueryProposal, cr.Cohort.Proposal)
	if err != nil {
		return cohortRecords{}, err
	}
	if len(pr.Proposals) != 1 {
		return cohortRecords{}, fmt.Errorf("proposal %d: %d answers", cr.Cohort.Proposal, len(pr.Proposals))
	}
	rr, err := cl.All(c.Context, protocol.Query{What: protocol.QueryRounds, ID: id, Linearizable: linearizable}, maxListed)
	if err != nil {
		return cohortRecords{}, fmt.Errorf("query rounds: %w", err)
	}
	lr, err := cl.All(c.Context, protocol.Query{What: protocol.QueryLedger, ID: id, Linearizable: linearizable}, maxListed)
	if err != nil {
		return cohortRecords{}, fmt.Errorf("query ledger: %w", err)
	}
	rec := cohortRecords{proposal: pr.Proposals[0], cohort: *cr.Cohort, rounds: rr.Rounds}
	if lr.Ledger != nil { // an empty ledger may travel as no ledger
		rec.ledger = *lr.Ledger
	}
	return rec, nil
}
