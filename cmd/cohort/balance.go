package main

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
)

func balanceCommand() *cli.Command {
	return &cli.Command{
		Name:  "balance",
		Usage: "what a member's contributors have earned, across every cohort, and its vote weight",
		Description: `Reads the member (the key of --key, or --member ID) and its contributors' balances from
   any coordinator: two point queries, whatever the size of the ledger.

   Example:
     cohort balance --coordinator 127.0.0.1:7000 --key alice.key`,
		Flags: append(clientFlags(false),
			&cli.StringFlag{Name: "member", Usage: "member ID to look up (default: the member of --key)", EnvVars: envVars("member")},
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table", EnvVars: envVars("json")},
		),
		Action: runBalance,
	}
}

// balanceSummary is what `cohort balance --json` prints.
type balanceSummary struct {
	Member       string              `json:"member"`
	Name         string              `json:"name"`
	Contributors []contributorEarned `json:"contributors"`
	Earned       uint64              `json:"earned"`
	Granted      uint64              `json:"granted"`
	VoteWeight   uint64              `json:"vote_weight"`
}

type contributorEarned struct {
	Name   string `json:"name"`
	Earned uint64 `json:"earned"`
}

func runBalance(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("balance: unexpected argument %q", c.Args().First())
	}
	member := c.String("member")
	if member == "" && c.String("key") == "" {
		return fmt.Errorf("balance: give --key (your member key) or --member ID")
	}
	cl, err := dialClient(c)
	if err != nil {
		return fmt.Errorf("balance: %w", err)
	}
	defer cl.Close()
	if member == "" {
		member = cl.ID()
	}
	mr, err := cl.Query(c.Context, protocol.Query{What: protocol.QueryMember, Member: member})
	if err != nil {
		return fmt.Errorf("balance: member %s: %w", member, err)
	}
	if mr.Member == nil {
		return fmt.Errorf("balance: member %s: empty answer", member)
	}
	br, err := cl.Query(c.Context, protocol.Query{What: protocol.QueryBalances, Member: member})
	if err != nil {
		return fmt.Errorf("balance: balances of %s: %w", member, err)
	}
	out := balanceSummary{Member: member, Name: mr.Member.Name, Granted: mr.Member.Granted, Contributors: []contributorEarned{}}
	for _, b := range br.Balances {
		if m, _, ok := consensus.SplitContributorKey(b.Contributor); !ok || m != member {
			return fmt.Errorf("balance: the coordinator answered for contributor %q, not one of %s's", b.Contributor, member)
		}
		var carry uint64
		if out.Earned, carry = bits.Add64(out.Earned, b.Amount, 0); carry != 0 {
			return fmt.Errorf("balance: balances of %s overflow", member)
		}
		out.Contributors = append(out.Contributors, contributorEarned{Name: consensus.ContributorName(b.Contributor), Earned: b.Amount})
	}
	var carry uint64
	if out.VoteWeight, carry = bits.Add64(out.Earned, out.Granted, 0); carry != 0 {
		return fmt.Errorf("balance: vote weight of %s overflows", member)
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(c.App.Writer, "member %s (%s)\n", cell(out.Member), cell(out.Name))
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "contributor\tearned")
	for _, x := range out.Contributors {
		fmt.Fprintf(tw, "%s\t%d\n", cell(x.Name), x.Earned)
	}
	fmt.Fprintf(tw, "total\t%d\n", out.Earned)
	tw.Flush()
	fmt.Fprintf(c.App.Writer, "vote weight %d (earned %d + granted %d)\n", out.VoteWeight, out.Earned, out.Granted)
	return nil
}
