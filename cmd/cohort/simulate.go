package main

import (
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/sim"
	"github.com/cohortlab/cohort/spec"
)

func simulateCommand() *cli.Command {
	return &cli.Command{
		Name:  "simulate",
		Usage: "run a whole cohort on this machine: Raft coordinators and peers over shaped QUIC links",
		Description: `Real coordinator nodes (on-disk Raft in a temporary directory) and real peers in one process,
   talking QUIC over loopback; each peer's link is shaped (rate, delay, loss). A member proposes the
   model, the peers vote, join with their data shards and train until the last round.

   Example:
     cohort simulate --coordinators 3 --peers 6 --model mlp --rounds 20 --inner-steps 50 --codec topk:0.01+q4 \
                     --partition dirichlet:0.5 --link 10mbit,50ms,1% --seed 1 --kill-leader-at 5`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "coordinators", Value: 3, Usage: "coordinator nodes (the Raft voters)", EnvVars: envVars("coordinators")},
			&cli.IntFlag{Name: "aggregators", Usage: "aggregators beyond the voters: coordinators that join as Raft non-voters and aggregate slices too (0: none)", EnvVars: envVars("aggregators")},
			&cli.IntFlag{Name: "peers", Value: 6, Usage: "peers, each with its own data shard and link", EnvVars: envVars("peers")},
			&cli.StringFlag{Name: "model", Value: "mlp", Usage: "mlp, mlp:784-256-10, charlm or gpt:L-D-NH-T", EnvVars: envVars("model")},
			&cli.IntFlag{Name: "rounds", Value: int(spec.Defaults.Rounds), Usage: "outer rounds", EnvVars: envVars("rounds")},
			&cli.IntFlag{Name: "inner-steps", Value: int(spec.Defaults.InnerSteps), Usage: "inner steps H", EnvVars: envVars("inner_steps")},
			&cli.IntFlag{Name: "batch", Usage: "batch size per peer (0: the model's default)", EnvVars: envVars("batch")},
			&cli.IntFlag{Name: "overlap", Usage: "inner steps τ each peer takes while its update travels (overlaps communication with compute; 0: none)", EnvVars: envVars("overlap")},
			&cli.StringFlag{Name: "codec", Value: spec.Defaults.Codec, Usage: "pseudo-gradient codec", EnvVars: envVars("codec")},
			downCodecFlag(),
			&cli.StringFlag{Name: "partition", Value: "dirichlet:0.5", Usage: partitionUsage, EnvVars: envVars("partition")},
			labelNoiseFlag(),
			&cli.StringFlag{Name: "trace", Usage: "write what the leader scored each round from, and what it decided, to this file (JSON lines)", EnvVars: envVars("trace")},
			outerLRFlag(), outerMomentumFlag(), errorDecayFlag(),
			&cli.StringFlag{Name: "link", Value: "10mbit,50ms,1%", Usage: `each peer's link: RATE,DELAY[,LOSS%] ("" for plain loopback)`, EnvVars: envVars("link")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for data, models and links", EnvVars: envVars("seed")},
			&cli.StringFlag{Name: "data", Value: "embedded", Usage: "Fashion-MNIST directory, or embedded; for gpt models a text file or directory of .txt files, or embedded (the play)", EnvVars: envVars("data")},
			&cli.IntFlag{Name: "val-samples", Value: 1000, Usage: "validation samples", EnvVars: envVars("val_samples")},
			&cli.IntFlag{Name: "kill-leader-at", Usage: "kill the leader coordinator when this round opens (0: never)", EnvVars: envVars("kill_leader_at")},
			&cli.StringFlag{Name: "kill-peer", Usage: "NAME@ROUND: stop a peer when the round opens, restart it a round later", EnvVars: envVars("kill_peer")},
			&cli.StringFlag{Name: "straggler", Usage: "a peer (e.g. peer-3) whose updates arrive after every deadline", EnvVars: envVars("straggler")},
			&cli.StringSliceFlag{Name: "bad-peer", Usage: "plant a dishonest peer, KIND[:ARG][@NAME] (repeatable); kinds: " + strings.Join(sim.BadKinds, ", "), EnvVars: envVars("bad_peer")},
			&cli.DurationFlag{Name: "round-timeout", Value: 2 * time.Minute, Usage: "longest a round may take", EnvVars: envVars("round_timeout")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary as the last line", EnvVars: envVars("json")},
		}, innerFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("simulate: unexpected argument %q", c.Args().First())
			}
			if err := checkFlags(c, "simulate", append([]bound{between("coordinators", 1, 7), between("aggregators", 0, sim.MaxAggregators), between("peers", 1, maxWorkers),
				between("rounds", 1, maxRounds), between("inner-steps", 1, maxInnerSteps), batchBound("batch"),
				between("overlap", 0, maxInnerSteps-1), between("val-samples", 1, maxValSamples),
				between("kill-leader-at", 0, maxRounds), positive("round-timeout", 24*3600, "the default 2m")}, innerBounds()...)...); err != nil {
				return err
			}
			out := c.App.Writer
			cfg := sim.Config{
				Coordinators: c.Int("coordinators"), Aggregators: c.Int("aggregators"), Peers: c.Int("peers"), Model: c.String("model"), Rounds: c.Int("rounds"),
				InnerSteps: c.Int("inner-steps"), Overlap: c.Int("overlap"), Batch: c.Int("batch"), Codec: c.String("codec"), DownCodec: c.String("down-codec"), Partition: c.String("partition"),
				OuterLR: decimal(c.Float64("outer-lr")), OuterMomentum: decimal(c.Float64("outer-momentum")), ErrorDecay: decimal(c.Float64("ef-decay")),
				Link: c.String("link"), Seed: c.Uint64("seed"), DataDir: c.String("data"), ValSamples: c.Int("val-samples"),
				KillLeaderAt: c.Int("kill-leader-at"), KillPeer: c.String("kill-peer"), Straggler: c.String("straggler"),
				RoundTimeout: c.Duration("round-timeout"), Logger: slog.Default(), BadPeers: c.StringSlice("bad-peer"),
			}
			noise, err := labelNoise(c, c.Int("peers")+len(c.StringSlice("bad-peer")))
			if err != nil {
				return fmt.Errorf("simulate: %w", err)
			}
			cfg.LabelNoise = noise
			var traces traceLog
			if c.String("trace") != "" {
				cfg.OnScore = traces.add
			}
			inner := withInner(c, consensus.Hyperparams{})
			cfg.InnerLR, cfg.WeightDecay, cfg.Warmup, cfg.Schedule, cfg.ClipNorm = inner.InnerLR, inner.WeightDecay, int(inner.Warmup), inner.Schedule, inner.ClipNorm
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("simulate: %w", err)
			}
			cfg.Progress = func(p sim.Progress) {
				eta := time.Duration(0)
				if p.Round > 0 {
					eta = p.Elapsed / time.Duration(p.Round) * time.Duration(p.Rounds-p.Round)
				}
				note := ""
				if !p.Applied {
					note = "  (round abandoned: model unchanged)"
				}
				fmt.Fprintf(out, "round %3d/%d  val_loss %.4f  val_acc %5.1f%%  peers %d  payload %s  wire %s  link %4.1f%%  leader changes %d  elapsed %s  eta %s%s\n",
					p.Round, p.Rounds, p.ValLoss, 100*p.ValAccuracy, p.Participants, humanBytes(p.PayloadBytes), humanBytes(p.WireBytes),
					100*p.LinkUtil, p.LeaderChanges, p.Elapsed.Round(time.Second), eta.Round(time.Second), note)
			}
			sum, err := sim.Run(c.Context, cfg)
			if err != nil {
				return fmt.Errorf("simulate: %w", err)
			}
			if path := c.String("trace"); path != "" {
				if err := traces.write(path); err != nil {
					return fmt.Errorf("simulate: %w", err)
				}
			}
			if c.Bool("json") {
				return printJSON(out, sum)
			}
			fmt.Fprintf(out, "\n%d rounds, val_loss %.4f, val_acc %.2f%%, %s sent per peer on the wire (%s payload, codec %s, down %s), compute %.0f%% of %.1fs wall, leader changes %d, replicas agree: %v (model %s)\n",
				sum.RoundsCompleted, sum.FinalValLoss, 100*sum.FinalValAccuracy, humanBytes(sum.BytesSentPerPeer), humanBytes(sum.PayloadBytesPerPeer),
				sum.Codec, sum.DownCodec, 100*sum.ComputeSeconds/sum.WallSeconds, sum.WallSeconds, sum.LeaderChanges, sum.ReplicasAgree, sum.ModelHash)
			if sc := sum.Scale; sc.RoundSeconds > 0 {
				fmt.Fprintf(out, "setup %.1fs; after round 1: %.1fs per round, %.0f Raft entries per round, %s of control messages and %s of QUIC packet overhead per peer per round, sent/payload %.2f; per peer per round %s uploaded, %s of aggregates fetched; validating a model %.2fs\n",
					sc.SetupSeconds, sc.RoundSeconds, sc.RaftEntriesPerRound, humanBytes(int64(sc.ControlBytesPerPeerRound)), humanBytes(int64(sc.PacketOverheadPerPeerRound)), sc.WireSentOverPayload,
					humanBytes(int64(sc.UploadBytesPerPeerRound)), humanBytes(int64(sc.AggregateBytesPerPeerRound)), sc.ValidationSeconds)
			}
			var paid uint64
			for _, v := range sum.Shares {
				paid += v
			}
			fmt.Fprintf(out, "\ncontributions (%d of %d rounds scored; paid %d of the pool of %d):\n", sum.RoundsScored, sum.RoundsCompleted, paid, sum.Pool)
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "peer\trounds\tsamples\tpayload\twire sent\tpayout\tshare\tflags")
			for _, p := range sum.Peers {
				share := 0.0
				if sum.Pool > 0 {
					share = 100 * float64(sum.Shares[p.Name]) / float64(sum.Pool)
				}
				flags := strings.Join(sum.Flags[p.Name], "; ")
				if p.Bad != "" {
					flags = "[planted " + p.Bad + "] " + flags
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%.2f%%\t%s\n", report.Escape(p.Name), p.RoundsParticipated, p.Samples, humanBytes(p.PayloadBytes),
					humanBytes(p.WireBytesSent), sum.Shares[p.Name], share, report.Escape(flags))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if strings.HasPrefix(sum.ModelSpec, "gpt:") && sum.Theta != nil {
				sample, err := sampleText(sum.ModelSpec, sum.Theta, cfg.Seed)
				if err != nil {
					return fmt.Errorf("simulate: sampling the final model: %w", err)
				}
				fmt.Fprintf(out, "\nsample of the final model (200 bytes, temperature 0.8):\n%s\n", sample)
			}
			return nil
		},
	}
}
