package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/audit"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/sim"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "hold a cohort's ledger shares against leave-one-out and Shapley values by retraining (a simulated cohort, or a finished one)",
		Description: `Runs the scenario twice over. First as a cohort (cohort simulate: coordinators, peers, QUIC,
   the validator's scoring and the ledger), for the shares the ledger paid each contributor. Then as
   ground truth: every coalition of contributors the Shapley values need is retrained in process
   (DiLoCo with the cohort's codec, error feedback and outer step) on its members' shards alone, and
   its final validation loss is its value (the empty coalition's is θ_0's).

   Leave-one-out of i: loss without i − loss with everyone (positive: i helps). Shapley: exact over
   every coalition up to 8 contributors (2^n − 1 retrainings), seeded permutation sampling with
   truncation beyond (--permutations, --tolerance), with standard errors. Against the shares: the
   Spearman rank correlation and the L1 distance of the two vectors normalised to sum 1 (negative
   Shapley values clamped to 0: a contributor who hurt the model is owed nothing), and each
   contributor's share minus its normalised Shapley value (over: paid more than it was worth).
   Retraining is noisy too: --repeats K runs every retraining K times in other batch orders, averages
   the Shapley values (with standard errors) and says how well the runs agree with each other, the
   resolution the ledger's agreement is to be read against.

   With --coordinator it audits a finished cohort of the cluster instead: it reads the cohort's
   proposal (model, H, rounds, codec, outer step, inner AdamW, θ_0's seed), its contributors and
   what the ledger paid each (data + compute), and retrains coalitions of the contributors' own
   shards (--shards: NAME=DIR,… or a directory with one sub-directory per contributor, named as
   the contributor; image directories or text, as cohort join takes them) with exactly those
   settings. Every contributor who trained or was paid needs its shard, checked against the
   fingerprint it registered; the validation split is --data's (the coordinators' own validation
   data, capped at --val-samples as theirs), checked against the hash the proposal recorded. The
   settings of a simulation (--peers, --model, --rounds, ...) do not go with it.

   Examples:
     cohort audit --peers 6 --partition dirichlet:1 --model mlp --rounds 12 --inner-steps 30 --seed 1
     cohort audit --coordinator 127.0.0.1:7001 --cohort 1 --shards alice=./shards/alice,bob=./shards/bob
     cohort audit --coordinator 127.0.0.1:7001 --cohort 1 --shards ./shards --json`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "peers", Value: 6, Usage: "contributors, each with its own data shard", EnvVars: envVars("peers")},
			&cli.StringFlag{Name: "partition", Value: "dirichlet:0.5", Usage: partitionUsage, EnvVars: envVars("partition")},
			labelNoiseFlag(),
			&cli.StringFlag{Name: "trace", Usage: "write what the leader scored each round from, and what it decided, to this file (JSON lines)", EnvVars: envVars("trace")},
			&cli.StringFlag{Name: "model", Value: "mlp", Usage: "mlp, mlp:784-256-10, charlm or gpt:L-D-NH-T", EnvVars: envVars("model")},
			&cli.IntFlag{Name: "rounds", Value: int(spec.Defaults.Rounds), Usage: "outer rounds", EnvVars: envVars("rounds")},
			&cli.IntFlag{Name: "inner-steps", Value: int(spec.Defaults.InnerSteps), Usage: "inner steps H", EnvVars: envVars("inner_steps")},
			&cli.IntFlag{Name: "batch", Usage: "batch size per peer, or per contributor retrained (0: the model's default)", EnvVars: envVars("batch")},
			&cli.StringFlag{Name: "codec", Value: spec.Defaults.Codec, Usage: "pseudo-gradient codec", EnvVars: envVars("codec")},
			outerLRFlag(), outerMomentumFlag(), errorDecayFlag(),
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for data, models and permutations (with --coordinator: the shards' batch order and the permutations; θ_0 is the cohort's)", EnvVars: envVars("seed")},
			&cli.StringFlag{Name: "data", Value: "embedded", Usage: "Fashion-MNIST directory, or embedded; for gpt models a text file or directory of .txt files, or embedded (with --coordinator: the validation data, as the coordinators' --data)", EnvVars: envVars("data")},
			&cli.IntFlag{Name: "val-samples", Value: 1000, Usage: "validation samples (with --coordinator: as the coordinators' --val-samples)", EnvVars: envVars("val_samples")},
			&cli.IntFlag{Name: "coordinators", Value: 3, Usage: "coordinator nodes of the simulated cohort", EnvVars: envVars("coordinators")},
			&cli.StringFlag{Name: "link", Usage: `each simulated peer's link: RATE,DELAY[,LOSS%] ("": plain loopback)`, EnvVars: envVars("link")},
			&cli.StringFlag{Name: "utility", Value: "auto", Usage: "what the ledger's shares are held against: the Shapley value of the final validation accuracy, or of its loss reduction (auto: accuracy for image models, loss for language models)", EnvVars: envVars("utility")},
			&cli.StringFlag{Name: "method", Value: "auto", Usage: "Shapley values: auto (exact up to 8 contributors), exact (up to 20) or sampled", EnvVars: envVars("method")},
			&cli.IntFlag{Name: "permutations", Value: audit.DefaultPermutations, Usage: "permutations drawn when sampling", EnvVars: envVars("permutations")},
			&cli.IntFlag{Name: "repeats", Value: 1, Usage: "run every retraining this many times, in other batch orders: the Shapley values are their means, with standard errors, and the runs' agreement with each other is the ground truth's resolution", EnvVars: envVars("repeats")},
			&cli.Float64Flag{Name: "tolerance", Value: audit.DefaultTolerance, Usage: "sampling: stop a permutation once its prefix is within this fraction of the whole cohort's loss reduction (negative: never)", EnvVars: envVars("tolerance")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary as the last line (no progress line)", EnvVars: envVars("json")},
			&cli.StringFlag{Name: "coordinator", Usage: "audit a finished cohort rather than a simulated one: coordinator address(es), comma-separated (with --cohort and --shards)", EnvVars: envVars("coordinator")},
			&cli.Uint64Flag{Name: "cohort", Usage: "the cohort to audit (with --coordinator)", EnvVars: envVars("cohort")},
			&cli.StringFlag{Name: "shards", Usage: "the contributors' shards: NAME=DIR,NAME=DIR,... or a directory of one sub-directory per contributor, named as the contributor (with --coordinator)", EnvVars: envVars("shards")},
			&cli.StringFlag{Name: "key", Usage: "member key file (with --coordinator; reads may use a throwaway key)", EnvVars: envVars("key")},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up a query of the cluster after this long (with --coordinator)", EnvVars: envVars("timeout")},
		}, innerFlags()...),
		Action: runAudit,
	}
}

// auditRow is one contributor in auditSummary.
type auditRow struct {
	Name              string  `json:"name"`
	Member            string  `json:"member,omitempty"` // the member that speaks for it (a finished cohort's)
	ShardSize         int     `json:"shard_size"`
	LOO               float64 `json:"loo"`
	LOOAccuracy       float64 `json:"loo_accuracy"`
	Shapley           float64 `json:"shapley"`
	ShapleySE         float64 `json:"shapley_se"`
	ShapleyAccuracy   float64 `json:"shapley_accuracy"`
	ShapleyAccuracySE float64 `json:"shapley_accuracy_se,omitempty"`
	ShapleyNormalised float64 `json:"shapley_normalised"`
	Payout            uint64  `json:"payout"`
	Share             float64 `json:"share"`
	OverPaid          float64 `json:"over_paid"` // share − normalised Shapley
}

// auditSummary is what `cohort audit --json` prints.
type auditSummary struct {
	Peers        int         `json:"peers"`
	Model        string      `json:"model"`
	Partition    string      `json:"partition"`
	Rounds       int         `json:"rounds"`
	InnerSteps   int         `json:"inner_steps"`
	Codec        string      `json:"codec"`
	Seed         uint64      `json:"seed"`
	Method       string      `json:"method"`
	Utility      string      `json:"utility"` // "accuracy" or "loss": the Shapley values the shares are compared with
	Permutations int         `json:"permutations,omitempty"`
	Truncated    int         `json:"truncated,omitempty"`
	Retrainings  int         `json:"retrainings"`
	Initial      audit.Value `json:"initial"`
	Retrained    audit.Value `json:"retrained"`
	// Cohort is the cohort's final model (as its validator measured it), RoundsScored its scored
	// rounds, Pool its reward pool.
	Cohort       audit.Value `json:"cohort"`
	RoundsScored int         `json:"rounds_scored"`
	Pool         uint64      `json:"pool"`
	// CohortID, Proposal and Paid are a finished cohort's (the audit with --coordinator): its ID,
	// its proposal's and what the ledger paid its contributors. CohortID is 0 for a simulation.
	CohortID uint64 `json:"cohort_id,omitempty"`
	Proposal uint64 `json:"proposal,omitempty"`
	Paid     uint64 `json:"paid,omitempty"`
	// Spearman is null when either vector is constant.
	Spearman *float64 `json:"spearman"`
	L1       float64  `json:"l1"`
	// Repeats is how many runs of the retrainings the Shapley values average (--repeats). With more
	// than one, Agreement is how well the runs agree with each other (the ground truth's
	// resolution), and RunSpearman and RunL1 how well the ledger agrees with one run (the mean over
	// the runs), to be held beside it.
	Repeats     int              `json:"repeats,omitempty"`
	Agreement   *audit.Agreement `json:"agreement,omitempty"`
	RunSpearman *float64         `json:"run_spearman,omitempty"`
	RunL1       float64          `json:"run_l1,omitempty"`
	// Order, with more than one run, counts the pairs of contributors whose Shapley values differ
	// by more than two standard errors of the difference, and how many of them the ledger's
	// shares order the same way: the ranking held only where the ground truth has one.
	Order           *audit.Order `json:"resolved_order,omitempty"`
	Contributors    []auditRow   `json:"contributors"`
	SimulateSeconds float64      `json:"simulate_seconds"`
	RetrainSeconds  float64      `json:"retrain_seconds"`
	WallSeconds     float64      `json:"wall_seconds"`
}

func runAudit(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("audit: unexpected argument %q", c.Args().First())
	}
	if c.IsSet("coordinator") {
		return runAuditCohort(c)
	}
	for _, f := range auditCohortFlags {
		if c.IsSet(f) {
			return fmt.Errorf("audit: --%s%s goes with --coordinator (auditing a finished cohort); without it the audit simulates a cohort", f, fromEnv(f))
		}
	}
	if err := checkFlags(c, "audit", append([]bound{between("peers", 1, audit.MaxPlayers), between("rounds", 1, maxRounds),
		between("inner-steps", 1, maxInnerSteps), batchBound("batch"), between("val-samples", 1, maxValSamples),
		between("coordinators", 1, 7), between("permutations", 1, 1_000_000), between("tolerance", -1, 1), between("repeats", 1, audit.MaxRepeats),
		positive("outer-lr", 100, "no outer step"), momentum("outer-momentum"), positive("ef-decay", 1, "no error feedback decay, as 1")},
		innerBounds()...)...); err != nil {
		return err
	}
	n := c.Int("peers")
	method, utility, err := auditMethod(c, c.String("model"), n, "peers")
	if err != nil {
		return err
	}
	h := withInner(c, consensus.Hyperparams{InnerSteps: uint32(c.Int("inner-steps")), Rounds: uint32(c.Int("rounds")), Codec: c.String("codec"),
		OuterLR: decimal(c.Float64("outer-lr")), OuterMomentum: decimal(c.Float64("outer-momentum")), ErrorDecay: decimal(c.Float64("ef-decay"))})
	noise, err := labelNoise(c, n)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	sc := audit.Scenario{
		Task: trainer.TaskSpec{Model: c.String("model"), Workers: n, Partition: c.String("partition"), Seed: c.Uint64("seed"),
			DataDir: c.String("data"), Batch: c.Int("batch"), ValSamples: c.Int("val-samples"), LabelNoise: noise},
		Params: h,
	}
	cfg := sim.Config{
		Coordinators: c.Int("coordinators"), Peers: n, Model: sc.Task.Model, Rounds: int(h.Rounds), InnerSteps: int(h.InnerSteps),
		Batch: sc.Task.Batch, Codec: h.Codec, Partition: sc.Task.Partition, OuterLR: h.OuterLR, OuterMomentum: h.OuterMomentum,
		ErrorDecay: h.ErrorDecay, InnerLR: h.InnerLR, WeightDecay: h.WeightDecay, Warmup: int(h.Warmup), Schedule: h.Schedule,
		ClipNorm: h.ClipNorm, Link: c.String("link"), Seed: sc.Task.Seed, DataDir: sc.Task.DataDir, ValSamples: sc.Task.ValSamples,
		LabelNoise: noise, Logger: slog.Default(),
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	// The scenario is checked (partition, model, data) before the cohort runs.
	r, err := audit.NewRetrainer(sc)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	jsonOut := c.Bool("json")
	bar := newProgressLine(errWriter(c), !jsonOut)
	start := time.Now()

	cfg.Progress = func(p sim.Progress) { bar.show("cohort: round %d/%d", p.Round, p.Rounds) }
	var traces traceLog
	if path := c.String("trace"); path != "" {
		cfg.OnScore = traces.add
	}
	sum, err := sim.Run(c.Context, cfg)
	bar.done()
	if err != nil {
		return fmt.Errorf("audit: simulate: %w", err)
	}
	if path := c.String("trace"); path != "" {
		if err := traces.write(path); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	simSeconds := time.Since(start).Seconds()

	retrainStart := time.Now()
	res, err := retrain(c, r, method, sc.Task.Seed, bar)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	out := auditSummary{
		Peers: n, Model: sc.Task.Model, Partition: sc.Task.Partition, Rounds: int(h.Rounds), InnerSteps: int(h.InnerSteps),
		Codec: r.Codec(), Seed: sc.Task.Seed, Method: string(res.Method), Utility: utility, Permutations: res.Permutations, Truncated: res.Truncated,
		Retrainings: retrainings(res), Initial: res.Empty, Retrained: res.Grand,
		Cohort:       audit.Value{Loss: sum.FinalValLoss, Accuracy: sum.FinalValAccuracy},
		RoundsScored: sum.RoundsScored, Pool: sum.Pool,
		SimulateSeconds: simSeconds, RetrainSeconds: time.Since(retrainStart).Seconds(), WallSeconds: time.Since(start).Seconds(),
	}
	// The simulator names its peers peer-1 … peer-N, peer i holding shard i − 1.
	rows := make([]auditRow, n)
	for i := range rows {
		rows[i].Name = fmt.Sprintf("peer-%d", i+1)
		rows[i].Payout = sum.Shares[rows[i].Name]
	}
	if err := compareAudit(&out, res, rows, r.ShardSizes()); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if jsonOut {
		return printJSON(c.App.Writer, out)
	}
	return printAudit(c.App.Writer, out)
}

// auditCohortFlags are the flags of a finished cohort's audit that a simulation refuses (its
// --key and --timeout, which other commands share, it ignores).
var auditCohortFlags = []string{"cohort", "shards"}

// fromEnv names the environment variable that set flag, if one is set: a setting meant for
// another command may be what a conflict comes from.
func fromEnv(flag string) string {
	if v := envVars(flag)[0]; os.Getenv(v) != "" {
		return " (" + v + " is set)"
	}
	return ""
}

// auditMethod reads --method and --utility (auto: accuracy for image models) for n contributors
// (counted by --what).
func auditMethod(c *cli.Context, model string, n int, what string) (audit.Method, string, error) {
	method := audit.Method(c.String("method"))
	switch method {
	case "auto":
		method = audit.MethodAuto
	case audit.MethodExact, audit.MethodSampled:
	default:
		return "", "", fmt.Errorf("audit: --method %q: want auto, exact or sampled", c.String("method"))
	}
	utility := c.String("utility")
	switch utility {
	case "auto":
		utility = "loss"
		if model == "mlp" || strings.HasPrefix(model, "mlp:") {
			utility = "accuracy"
		}
	case "accuracy", "loss":
	default:
		return "", "", fmt.Errorf("audit: --utility %q: want auto, accuracy or loss", utility)
	}
	if method == audit.MethodExact && n > audit.MaxExact {
		return "", "", fmt.Errorf("audit: --method exact with %d %s needs 2^%d retrainings: at most %d %s (use --method sampled)", n, what, n, audit.MaxExact, what)
	}
	return method, utility, nil
}

// retrain runs the retrainings Solve asks for (--repeats times), showing their progress on bar.
func retrain(c *cli.Context, r *audit.Retrainer, method audit.Method, seed uint64, bar *progressLine) (*audit.Result, error) {
	sampled := method == audit.MethodSampled || (method == audit.MethodAuto && r.Players() > audit.MaxAutoExact)
	res, err := r.RunRepeated(c.Context, audit.Options{Method: method, Permutations: c.Int("permutations"), Tolerance: c.Float64("tolerance"),
		Seed: seed, Progress: func(p audit.Progress) {
			run := ""
			if p.Repeats > 1 {
				run = fmt.Sprintf(" (run %d/%d)", p.Repeat, p.Repeats)
			}
			if sampled {
				bar.show("retrainings %d, permutations %d/%d%s", p.Evaluations-1, p.Done, p.Total, run)
			} else {
				bar.show("retrainings %d/%d%s", p.Evaluations-1, p.Total-1, run) // the empty coalition is θ_0
			}
		}}, c.Int("repeats"))
	bar.done()
	return res, err
}

// retrainings is how many models res was computed from: its evaluations but the empty
// coalition's (θ_0, evaluated once a run).
func retrainings(res *audit.Result) int { return res.Evaluations - max(res.Repeats, 1) }

// compareAudit fills s's contributors from rows (named, with their payouts, player i in row i)
// and the retrainings' values, and holds the Shapley values of s.Utility against the payouts.
func compareAudit(s *auditSummary, res *audit.Result, rows []auditRow, sizes []int) error {
	shares := make([]float64, len(rows))
	for i, row := range rows {
		shares[i] = float64(row.Payout)
	}
	truth := res.Shapley
	if s.Utility == "accuracy" {
		truth = res.ShapleyAccuracy
	}
	cmp, err := audit.Compare(truth, shares)
	if err != nil {
		return err
	}
	if !math.IsNaN(cmp.Spearman) {
		s.Spearman = &cmp.Spearman
	}
	s.L1 = cmp.L1
	if res.Repeats > 1 {
		s.Repeats, s.Agreement = res.Repeats, res.Agreement
		runs := res.RepeatShapley
		if s.Utility == "accuracy" {
			runs = res.RepeatShapleyAccuracy
		}
		var rho float64
		var ranked int
		for _, run := range runs {
			rc, err := audit.Compare(run, shares)
			if err != nil {
				return err
			}
			s.RunL1 += rc.L1 / float64(len(runs))
			if !math.IsNaN(rc.Spearman) {
				rho += rc.Spearman
				ranked++
			}
		}
		if ranked > 0 {
			rho /= float64(ranked)
			s.RunSpearman = &rho
		}
		se := res.ShapleySE
		if s.Utility == "accuracy" {
			se = res.ShapleyAccuracySE
		}
		o, err := audit.ResolvedOrder(truth, se, shares, 2)
		if err != nil {
			return err
		}
		s.Order = &o
	}
	for i, row := range rows {
		row.ShardSize, row.LOO, row.LOOAccuracy = sizes[i], res.LOO[i], res.LOOAccuracy[i]
		row.Shapley, row.ShapleySE, row.ShapleyAccuracy, row.ShapleyNormalised = res.Shapley[i], res.ShapleySE[i], res.ShapleyAccuracy[i], cmp.Shapley[i]
		if res.ShapleyAccuracySE != nil {
			row.ShapleyAccuracySE = res.ShapleyAccuracySE[i]
		}
		row.Share, row.OverPaid = cmp.Shares[i], cmp.Diff[i]
		s.Contributors = append(s.Contributors, row)
	}
	return nil
}

func printAudit(w io.Writer, s auditSummary) error {
	how := "exact, every coalition"
	if s.Method == string(audit.MethodSampled) {
		how = fmt.Sprintf("sampled, %d permutations (%d truncated)", s.Permutations, s.Truncated)
	}
	if s.CohortID != 0 {
		fmt.Fprintf(w, "%d contributors of cohort %d (proposal %d), %s, their own shards, %d rounds × H=%d, codec %s, seed %d\n",
			s.Peers, s.CohortID, s.Proposal, report.Escape(s.Model), s.Rounds, s.InnerSteps, s.Codec, s.Seed)
		fmt.Fprintf(w, "cohort %d: val_loss %.4f, val_acc %.2f%%, %d rounds scored, pool %d, paid %d\n", s.CohortID, s.Cohort.Loss, 100*s.Cohort.Accuracy, s.RoundsScored, s.Pool, s.Paid)
	} else {
		fmt.Fprintf(w, "%d contributors, %s, %s, %d rounds × H=%d, codec %s, seed %d\n", s.Peers, s.Model, s.Partition, s.Rounds, s.InnerSteps, s.Codec, s.Seed)
		fmt.Fprintf(w, "cohort: val_loss %.4f, val_acc %.2f%%, %d rounds scored, pool %d (%.1fs)\n", s.Cohort.Loss, 100*s.Cohort.Accuracy, s.RoundsScored, s.Pool, s.SimulateSeconds)
	}
	fmt.Fprintf(w, "retrained: %d coalitions (%s): θ_0 val_loss %.4f, everyone %.4f, val_acc %.2f%% (%.1fs)\n\n",
		s.Retrainings, how, s.Initial.Loss, s.Retrained.Loss, 100*s.Retrained.Accuracy, s.RetrainSeconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "contributor\tshard\tLOO loss\tLOO acc\tShapley loss ± se\tShapley acc\tShapley (norm.)\tledger share\tover/under\t")
	for _, r := range s.Contributors {
		acc := fmt.Sprintf("%+.2f pt", 100*r.ShapleyAccuracy)
		if s.Repeats > 1 {
			acc = fmt.Sprintf("%+.2f ± %.2f pt", 100*r.ShapleyAccuracy, 100*r.ShapleyAccuracySE)
		}
		fmt.Fprintf(tw, "%s\t%d\t%+.4f\t%+.2f pt\t%+.4f ± %.4f\t%s\t%.1f%%\t%.1f%%\t%+.1f pt\t\n", report.Escape(r.Name), r.ShardSize, r.LOO, 100*r.LOOAccuracy,
			r.Shapley, r.ShapleySE, acc, 100*r.ShapleyNormalised, 100*r.Share, 100*r.OverPaid)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	rho := "undefined (a constant vector)"
	if s.Spearman != nil {
		rho = fmt.Sprintf("%.3f", *s.Spearman)
	}
	fmt.Fprintf(w, "\nLOO and Shapley: the validation loss reduction and accuracy gain a contributor brings (positive: it helps). The shares are held against the Shapley values of the %s; normalised: negative values clamped to 0, then both vectors scaled to sum 1; over/under = ledger share − normalised Shapley.\n", s.Utility)
	fmt.Fprintf(w, "Spearman (Shapley, ledger shares): %s\n", rho)
	fmt.Fprintf(w, "L1 (normalised Shapley, ledger shares): %.3f (0: the same split, 2: disjoint)\n", s.L1)
	if s.Repeats > 1 && s.Agreement != nil {
		between, l1 := s.Agreement.Spearman, s.Agreement.L1
		if s.Utility == "accuracy" {
			between, l1 = s.Agreement.SpearmanAccuracy, s.Agreement.L1Accuracy
		}
		fmt.Fprintf(w, "%d runs of the retrainings, each in its own batch order; the Shapley values above are their means (± their standard error).\n", s.Repeats)
		fmt.Fprintf(w, "one run against another (the ground truth's own resolution): Spearman %s, L1 %.3f\n", optRho(between), l1)
		fmt.Fprintf(w, "the ledger against one run: Spearman %s, L1 %.3f\n", optRho(s.RunSpearman), s.RunL1)
		if o := s.Order; o != nil {
			fmt.Fprintf(w, "pairs of contributors the retrainings tell apart (values more than %g standard errors apart): %d of %d; the ledger orders %d of them the same way\n",
				o.Z, o.Resolved, o.Pairs, o.Agreeing)
		}
	}
	return nil
}

// optRho prints a rank correlation that may be undefined.
func optRho(r *float64) string {
	if r == nil {
		return "undefined (a constant vector)"
	}
	return fmt.Sprintf("%.3f", *r)
}

// progressLine redraws one status line with a carriage return, on a terminal only.
type progressLine struct {
	w    io.Writer
	on   bool
	last int
}

func newProgressLine(w io.Writer, want bool) *progressLine {
	f, ok := w.(*os.File)
	if !want || !ok {
		return &progressLine{}
	}
	st, err := f.Stat()
	return &progressLine{w: w, on: err == nil && st.Mode()&os.ModeCharDevice != 0}
}

func (p *progressLine) show(format string, args ...any) {
	if !p.on {
		return
	}
	s := fmt.Sprintf(format, args...)
	pad := max(p.last-len(s), 0)
	fmt.Fprintf(p.w, "\r%s%*s", s, pad, "")
	p.last = len(s)
}

func (p *progressLine) done() {
	if p.on && p.last > 0 {
		fmt.Fprintln(p.w)
		p.last = 0
	}
}
