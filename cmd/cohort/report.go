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
	q := func(what string, id uint64) (protocol.QueryReply, error) {
		r, err := cl.Query(c.Context, protocol.Query{What: what, ID: id})
		if err != nil {
			return r, fmt.Errorf("query %s: %w", what, err)
		}
		return r, nil
	}
	cr, err := q(protocol.QueryCohort, id)
	if err != nil {
		return report.Report{}, err
	}
	if cr.Cohort == nil {
		return report.Report{}, fmt.Errorf("cohort %d: empty answer", id)
	}
	pr, err := q(protocol.QueryProposal, cr.Cohort.Proposal)
	if err != nil {
		return report.Report{}, err
	}
	if len(pr.Proposals) != 1 {
		return report.Report{}, fmt.Errorf("proposal %d: %d answers", cr.Cohort.Proposal, len(pr.Proposals))
	}
	rr, err := cl.All(c.Context, protocol.Query{What: protocol.QueryRounds, ID: id}, maxListed)
	if err != nil {
		return report.Report{}, fmt.Errorf("query rounds: %w", err)
	}
	lr, err := cl.All(c.Context, protocol.Query{What: protocol.QueryLedger}, maxListed)
	if err != nil {
		return report.Report{}, fmt.Errorf("query ledger: %w", err)
	}
	var l consensus.Ledger // an empty ledger may travel as no ledger
	if lr.Ledger != nil {
		l = *lr.Ledger
	}
	return report.Build(pr.Proposals[0], *cr.Cohort, rr.Rounds, l), nil
}
