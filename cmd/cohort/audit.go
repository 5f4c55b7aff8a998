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
		Usage: "hold a simulated cohort's ledger shares against leave-one-out and Shapley values by retraining",
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

   Example:
     cohort audit --peers 6 --partition dirichlet:1 --model mlp --rounds 12 --inner-steps 30 --seed 1`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "peers", Value: 6, Usage: "contributors, each with its own data shard", EnvVars: envVars("peers")},
			&cli.StringFlag{Name: "partition", Value: "dirichlet:0.5", Usage: partitionUsage, EnvVars: envVars("partition")},
			labelNoiseFlag(),
			&cli.StringFlag{Name: "trace", Usage: "write what the leader scored each round from, and what it decided, to this file (JSON lines)", EnvVars: envVars("trace")},
			&cli.StringFlag{Name: "model", Value: "mlp", Usage: "mlp, mlp:784-256-10, charlm or gpt:L-D-NH-T", EnvVars: envVars("model")},
			&cli.IntFlag{Name: "rounds", Value: int(spec.Defaults.Rounds), Usage: "outer rounds", EnvVars: envVars("rounds")},
			&cli.IntFlag{Name: "inner-steps", Value: int(spec.Defaults.InnerSteps), Usage: "inner steps H", EnvVars: envVars("inner_steps")},
			&cli.IntFlag{Name: "batch", Usage: "batch size per peer (0: the model's default)", EnvVars: envVars("batch")},
			&cli.StringFlag{Name: "codec", Value: spec.Defaults.Codec, Usage: "pseudo-gradient codec", EnvVars: envVars("codec")},
			outerLRFlag(), outerMomentumFlag(), errorDecayFlag(),
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for data, models and permutations", EnvVars: envVars("seed")},
			&cli.StringFlag{Name: "data", Value: "embedded", Usage: "Fashion-MNIST directory, or embedded; for gpt models a text file or directory of .txt files, or embedded", EnvVars: envVars("data")},
			&cli.IntFlag{Name: "val-samples", Value: 1000, Usage: "validation samples", EnvVars: envVars("val_samples")},
			&cli.IntFlag{Name: "coordinators", Value: 3, Usage: "coordinator nodes of the simulated cohort", EnvVars: envVars("coordinators")},
			&cli.StringFlag{Name: "link", Usage: `each simulated peer's link: RATE,DELAY[,LOSS%] ("": plain loopback)`, EnvVars: envVars("link")},
			&cli.StringFlag{Name: "utility", Value: "auto", Usage: "what the ledger's shares are held against: the Shapley value of the final validation accuracy, or of its loss reduction (auto: accuracy for image models, loss for language models)", EnvVars: envVars("utility")},
			&cli.StringFlag{Name: "method", Value: "auto", Usage: "Shapley values: auto (exact up to 8 contributors), exact (up to 20) or sampled", EnvVars: envVars("method")},
			&cli.IntFlag{Name: "permutations", Value: audit.DefaultPermutations, Usage: "permutations drawn when sampling", EnvVars: envVars("permutations")},
			&cli.Float64Flag{Name: "tolerance", Value: audit.DefaultTolerance, Usage: "sampling: stop a permutation once its prefix is within this fraction of the whole cohort's loss reduction (negative: never)", EnvVars: envVars("tolerance")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary as the last line (no progress line)", EnvVars: envVars("json")},
		}, innerFlags()...),
		Action: runAudit,
	}
}

// auditRow is one contributor in auditSummary.
type auditRow struct {
	Name              string  `json:"name"`
	ShardSize         int     `json:"shard_size"`
	LOO               float64 `json:"loo"`
	LOOAccuracy       float64 `json:"loo_accuracy"`
	Shapley           float64 `json:"shapley"`
	ShapleySE         float64 `json:"shapley_se"`
	ShapleyAccuracy   float64 `json:"shapley_accuracy"`
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
	// Cohort is the simulated cohort's final model, RoundsScored its scored rounds, Pool its
	// reward pool.
	Cohort       audit.Value `json:"cohort"`
	RoundsScored int         `json:"rounds_scored"`
	Pool         uint64      `json:"pool"`
	// Spearman is null when either vector is constant.
	Spearman        *float64   `json:"spearman"`
	L1              float64    `json:"l1"`
	Contributors    []auditRow `json:"contributors"`
	SimulateSeconds float64    `json:"simulate_seconds"`
	RetrainSeconds  float64    `json:"retrain_seconds"`
	WallSeconds     float64    `json:"wall_seconds"`
}

func runAudit(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("audit: unexpected argument %q", c.Args().First())
	}
	if err := checkFlags(c, "audit", append([]bound{between("peers", 1, audit.MaxPlayers), between("rounds", 1, maxRounds),
		between("inner-steps", 1, maxInnerSteps), batchBound("batch"), between("val-samples", 1, maxValSamples),
		between("coordinators", 1, 7), between("permutations", 1, 1_000_000), between("tolerance", -1, 1),
		positive("outer-lr", 100, "no outer step"), momentum("outer-momentum"), positive("ef-decay", 1, "no error feedback decay, as 1")},
		innerBounds()...)...); err != nil {
		return err
	}
	method := audit.Method(c.String("method"))
	switch method {
	case "auto":
		method = audit.MethodAuto
	case audit.MethodExact, audit.MethodSampled:
	default:
		return fmt.Errorf("audit: --method %q: want auto, exact or sampled", c.String("method"))
	}
	utility := c.String("utility")
	switch utility {
	case "auto":
		utility = "loss"
		if m := c.String("model"); m == "mlp" || strings.HasPrefix(m, "mlp:") {
			utility = "accuracy"
		}
	case "accuracy", "loss":
	default:
		return fmt.Errorf("audit: --utility %q: want auto, accuracy or loss", utility)
	}
	n := c.Int("peers")
	if method == audit.MethodExact && n > audit.MaxExact {
		return fmt.Errorf("audit: --method exact with %d peers needs 2^%d retrainings: at most %d peers (use --method sampled)", n, n, audit.MaxExact)
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
	sampled := method == audit.MethodSampled || (method == audit.MethodAuto && n > audit.MaxAutoExact)
	res, err := r.Run(c.Context, audit.Options{Method: method, Permutations: c.Int("permutations"), Tolerance: c.Float64("tolerance"),
		Seed: sc.Task.Seed, Progress: func(p audit.Progress) {
			if sampled {
				bar.show("retrainings %d, permutations %d/%d", p.Evaluations-1, p.Done, p.Total)
			} else {
				bar.show("retrainings %d/%d", p.Evaluations-1, p.Total-1) // the empty coalition is θ_0
			}
		}})
	bar.done()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	out := auditSummary{
		Peers: n, Model: sc.Task.Model, Partition: sc.Task.Partition, Rounds: int(h.Rounds), InnerSteps: int(h.InnerSteps),
		Codec: r.Codec(), Seed: sc.Task.Seed, Method: string(res.Method), Utility: utility, Permutations: res.Permutations, Truncated: res.Truncated,
		Retrainings: res.Evaluations - 1, Initial: res.Empty, Retrained: res.Grand,
		Cohort:       audit.Value{Loss: sum.FinalValLoss, Accuracy: sum.FinalValAccuracy},
		RoundsScored: sum.RoundsScored, Pool: sum.Pool,
		SimulateSeconds: simSeconds, RetrainSeconds: time.Since(retrainStart).Seconds(), WallSeconds: time.Since(start).Seconds(),
	}
	// The simulator names its peers peer-1 … peer-N, peer i holding shard i − 1.
	shares := make([]float64, n)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("peer-%d", i+1)
		shares[i] = float64(sum.Shares[names[i]])
	}
	truth := res.Shapley
	if utility == "accuracy" {
		truth = res.ShapleyAccuracy
	}
	cmp, err := audit.Compare(truth, shares)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if !math.IsNaN(cmp.Spearman) {
		out.Spearman = &cmp.Spearman
	}
	out.L1 = cmp.L1
	sizes := r.ShardSizes()
	for i, name := range names {
		out.Contributors = append(out.Contributors, auditRow{Name: name, ShardSize: sizes[i], LOO: res.LOO[i], LOOAccuracy: res.LOOAccuracy[i],
			Shapley: res.Shapley[i], ShapleySE: res.ShapleySE[i], ShapleyAccuracy: res.ShapleyAccuracy[i], ShapleyNormalised: cmp.Shapley[i],
			Payout: sum.Shares[name], Share: cmp.Shares[i], OverPaid: cmp.Diff[i]})
	}
	if jsonOut {
		return printJSON(c.App.Writer, out)
	}
	return printAudit(c.App.Writer, out)
}

func printAudit(w io.Writer, s auditSummary) error {
	how := "exact, every coalition"
	if s.Method == string(audit.MethodSampled) {
		how = fmt.Sprintf("sampled, %d permutations (%d truncated)", s.Permutations, s.Truncated)
	}
	fmt.Fprintf(w, "%d contributors, %s, %s, %d rounds × H=%d, codec %s, seed %d\n", s.Peers, s.Model, s.Partition, s.Rounds, s.InnerSteps, s.Codec, s.Seed)
	fmt.Fprintf(w, "cohort: val_loss %.4f, val_acc %.2f%%, %d rounds scored, pool %d (%.1fs)\n", s.Cohort.Loss, 100*s.Cohort.Accuracy, s.RoundsScored, s.Pool, s.SimulateSeconds)
	fmt.Fprintf(w, "retrained: %d coalitions (%s): θ_0 val_loss %.4f, everyone %.4f, val_acc %.2f%% (%.1fs)\n\n",
		s.Retrainings, how, s.Initial.Loss, s.Retrained.Loss, 100*s.Retrained.Accuracy, s.RetrainSeconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "contributor\tshard\tLOO loss\tLOO acc\tShapley loss ± se\tShapley acc\tShapley (norm.)\tledger share\tover/under\t")
	for _, r := range s.Contributors {
		fmt.Fprintf(tw, "%s\t%d\t%+.4f\t%+.2f pt\t%+.4f ± %.4f\t%+.2f pt\t%.1f%%\t%.1f%%\t%+.1f pt\t\n", report.Escape(r.Name), r.ShardSize, r.LOO, 100*r.LOOAccuracy,
			r.Shapley, r.ShapleySE, 100*r.ShapleyAccuracy, 100*r.ShapleyNormalised, 100*r.Share, 100*r.OverPaid)
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
	return nil
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
