package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/pipeline"
	"github.com/cohortlab/cohort/trainer/pipeline/quiclink"
	"github.com/cohortlab/cohort/transport"
)

func stageCommand() *cli.Command {
	return &cli.Command{
		Name:  "stage",
		Usage: "run one pipeline stage of a stage group as its own process (S such processes train one GPT together)",
		Description: `Runs stage i of S of one GPT: the stage holds only its consecutive blocks (the first also the
   embeddings, the last the final LayerNorm and the head), their AdamW state and θ of its range.
   S processes started with the same settings, each with its own --stage and key, link over
   mutually authenticated QUIC (consecutive stages, and the first with the last) and train what
   'cohort train --stages S --workers 1' trains in one process: the same bits. The last stage
   prints every round's losses and the model hash.

   Keys: every stage has its own key (cohort keygen prints its KEYID). --peers lists every stage
   of the group in stage order as KEYID@HOST:PORT (this stage's own entry included: its key must
   be --key's, its address the one it listens at); a connection from any other key is refused,
   and a dialled stage must prove the key listed for it.

   With --checkpoint DIR a stage saves its state after every round (its θ range and the copy of
   wte, AdamW moments and step, outer momentum, data position; the latest two rounds); restart
   all S stages with the same directories and they agree on the latest round every stage saved
   and resume there, to the bits of an uninterrupted run. A stage that dies makes its neighbours
   stop within --link-timeout, and they stop theirs.

   Example (three terminals, or machines; KEY0..KEY2 from cohort keygen):
     P=KEY0@127.0.0.1:7100,KEY1@127.0.0.1:7101,KEY2@127.0.0.1:7102
     cohort stage --model gpt:6-128-4-64 --data input.txt --stage 0/3 --key s0.key --listen 127.0.0.1:7100 --peers $P --rounds 10 --inner-steps 50 --checkpoint ck0
     cohort stage --model gpt:6-128-4-64 --data input.txt --stage 1/3 --key s1.key --listen 127.0.0.1:7101 --peers $P --rounds 10 --inner-steps 50 --checkpoint ck1
     cohort stage --model gpt:6-128-4-64 --data input.txt --stage 2/3 --key s2.key --listen 127.0.0.1:7102 --peers $P --rounds 10 --inner-steps 50 --checkpoint ck2`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "gpt:L-D-NH-T (layers, width, heads, context; bytes), e.g. gpt:8-256-8-64", EnvVars: envVars("model")},
			&cli.StringFlag{Name: "data", Usage: "UTF-8 text: a .txt file or a directory of .txt files, or \"embedded\" (the first and the last stage read it; the others ignore it)", EnvVars: envVars("data")},
			&cli.StringFlag{Name: "partition", Value: "iid", Usage: "how the training text is dealt (as cohort train --workers 1): iid, contiguous, iid:CHUNK, …", EnvVars: envVars("partition")},
			&cli.StringFlag{Name: "stage", Required: true, Usage: "this stage's place in its group, i/S (0 ≤ i < S ≤ layers)", EnvVars: envVars("stage")},
			&cli.StringFlag{Name: "key", Required: true, Usage: "this stage's key file (cohort keygen)", EnvVars: envVars("key")},
			&cli.StringFlag{Name: "peers", Required: true, Usage: "every stage of the group in stage order, KEYID@HOST:PORT,… (this one included)", EnvVars: envVars("peers")},
			&cli.StringFlag{Name: "listen", Usage: "UDP address to listen at (default: this stage's --peers address)", EnvVars: envVars("listen")},
			&cli.IntFlag{Name: "listen-fd", Usage: "listen on this inherited, bound UDP socket (3 or more) instead of opening --listen", EnvVars: envVars("listen_fd")},
			&cli.IntFlag{Name: "rounds", Value: 20, Usage: "outer rounds", EnvVars: envVars("rounds")},
			&cli.IntFlag{Name: "inner-steps", Value: 50, Usage: "inner steps H per round", EnvVars: envVars("inner_steps")},
			&cli.IntFlag{Name: "batch", Value: 0, Usage: "sequences per step (0: the model's default)", EnvVars: envVars("batch")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for initialisation, partition and batches", EnvVars: envVars("seed")},
			&cli.IntFlag{Name: "val-samples", Value: 0, Usage: "validation sequences (0: all of the held-out text)", EnvVars: envVars("val_samples")},
			outerLRFlag(), outerMomentumFlag(),
			&cli.IntFlag{Name: "micro-batches", Value: 1, Usage: "micro-batches M a step's batch is cut into (M divides the batch)", EnvVars: envVars("micro_batches")},
			&cli.StringFlag{Name: "stage-codec", Value: "fp32", Usage: "activations and their gradients between stages, fp32 or q8 (one scale per row)", EnvVars: envVars("stage_codec")},
			&cli.StringFlag{Name: "schedule", Value: "1f1b", Usage: "pipeline schedule, 1f1b or gpipe", EnvVars: envVars("schedule")},
			&cli.StringFlag{Name: "checkpoint", Usage: "directory to save this stage's state to after every round and resume from on restart", EnvVars: envVars("checkpoint")},
			&cli.DurationFlag{Name: "link-timeout", Value: 10 * time.Second, Usage: "a neighbour silent this long (its process died, its host went away) stops the stage", EnvVars: envVars("link_timeout")},
			&cli.DurationFlag{Name: "connect-timeout", Value: 2 * time.Minute, Usage: "how long to wait for the group's other stages to come up", EnvVars: envVars("connect_timeout")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary of this stage as the last line (peak_rss_bytes: the process's peak resident memory)", EnvVars: envVars("json")},
		}, innerFlags()...),
		Action: runStage,
	}
}

// parseStage parses --stage i/S.
func parseStage(s string) (i, n int, err error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("--stage %q: want i/S with 0 ≤ i < S, e.g. 0/2", s)
	}
	return i, n, nil
}

// parseStagePeers parses --peers KEYID@HOST:PORT,… into stages stages.
func parseStagePeers(s string, stages int) ([]quiclink.Peer, error) {
	parts := strings.Split(s, ",")
	if len(parts) != stages {
		return nil, fmt.Errorf("--peers: %d entries for a group of %d stages: list every stage, in stage order", len(parts), stages)
	}
	out := make([]quiclink.Peer, stages)
	seen := map[transport.NodeID]int{}
	for i, p := range parts {
		key, addr, ok := strings.Cut(strings.TrimSpace(p), "@")
		if !ok || addr == "" {
			return nil, fmt.Errorf("--peers: entry %d %q: want KEYID@HOST:PORT", i, p)
		}
		id, err := transport.ParseNodeID(key)
		if err != nil {
			return nil, fmt.Errorf("--peers: entry %d: %w", i, err)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--peers: entry %d: %w", i, err)
		}
		if j, dup := seen[id]; dup {
			return nil, fmt.Errorf("--peers: stages %d and %d have the same key %s", j, i, id)
		}
		seen[id] = i
		out[i] = quiclink.Peer{ID: id, Addr: addr}
	}
	return out, nil
}

func runStage(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("stage: unexpected argument %q", c.Args().First())
	}
	if err := checkFlags(c, "stage", append([]bound{between("inner-steps", 1, maxInnerSteps), between("rounds", 1, maxRounds), batchBound("batch"),
		between("val-samples", 0, maxValSamples), positive("outer-lr", 100, "no outer step"), momentum("outer-momentum"),
		between("listen-fd", 0, 1<<20), between("link-timeout", 0.1, 3600), between("connect-timeout", 0.1, 86400)}, innerBounds()...)...); err != nil {
		return err
	}
	self, S, err := parseStage(c.String("stage"))
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	model := c.String("model")
	if !strings.HasPrefix(model, "gpt:") {
		return fmt.Errorf("stage: --model %s: stage groups train gpt models", model)
	}
	mc, err := nn.ParseGPTName(model)
	if err != nil {
		return fmt.Errorf("stage: --model: %w", err)
	}
	if err := mc.Validate(); err != nil {
		return fmt.Errorf("stage: --model: %w", err)
	}
	mc = mc.WithDefaults()
	if S > mc.Layers {
		return fmt.Errorf("stage: --stage %s: %s has %d blocks, at most one stage each", c.String("stage"), model, mc.Layers)
	}
	if b := c.Int("batch"); b > 0 {
		mc.Batch = b
	}
	mc.Seed = c.Uint64("seed")
	M := c.Int("micro-batches")
	if M < 1 || mc.Batch%M != 0 {
		return fmt.Errorf("stage: --micro-batches %d: want a divisor of the batch of %d sequences", M, mc.Batch)
	}
	codec, err := compress.Parse(c.String("stage-codec"))
	if err != nil {
		return fmt.Errorf("stage: --stage-codec: %w", err)
	}
	if codec.Sparsifier != compress.Dense {
		return fmt.Errorf("stage: --stage-codec %s: want a dense setting, fp32 or q8", codec)
	}
	sched, err := pipeline.ParseSchedule(c.String("schedule"))
	if err != nil {
		return fmt.Errorf("stage: --schedule: %w", err)
	}
	peers, err := parseStagePeers(c.String("peers"), S)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	id, err := transport.LoadKey(c.String("key"))
	if err != nil {
		return fmt.Errorf("stage: --key: %w", err)
	}
	if peers[self].ID != id.NodeID() {
		return fmt.Errorf("stage: --peers lists %s for stage %d, but --key %s is %s", peers[self].ID, self, c.String("key"), id.NodeID())
	}
	rounds, H := c.Int("rounds"), c.Int("inner-steps")
	inner, err := spec.Inner(spec.Fill(withInner(c, consensus.Hyperparams{Rounds: uint32(rounds), InnerSteps: uint32(H)})))
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	outer := trainer.OuterConfig{LR: float32(c.Float64("outer-lr")), Momentum: float32(c.Float64("outer-momentum"))}
	if err := outer.Validate(); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if dir := c.String("checkpoint"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("stage: --checkpoint: %w", err)
		}
	}
	cfg := pipeline.ProcessConfig{Model: mc, Stage: self, Stages: S,
		Pipeline: pipeline.Config{Micro: M, Schedule: sched, AdamW: inner, Codec: codec},
		Outer:    outer, Rounds: rounds, InnerSteps: H, Checkpoint: c.String("checkpoint")}
	// The digest every stage checks its neighbours against, and its checkpoints: the settings
	// that change the bits, and the group's keys.
	var keys []string
	for _, p := range peers {
		keys = append(keys, p.ID.String())
	}
	cfg.Digest = sha256.Sum256([]byte(fmt.Sprintf("cohort stage group v1|%s|batch %d|seed %d|partition %s|val %d|rounds %d|H %d|inner %+v|outer %+v|micro %d|schedule %s|codec %s|keys %s",
		mc.Name(), mc.Batch, mc.Seed, c.String("partition"), c.Int("val-samples"), rounds, H, inner, outer, M, sched, codec, strings.Join(keys, ","))))
	if self == 0 || self == S-1 { // the stages that read the data; the others hold none
		task, info, err := trainer.BuildTask(trainer.TaskSpec{Model: model, Workers: 1, Partition: c.String("partition"), Seed: mc.Seed,
			DataDir: c.String("data"), Batch: mc.Batch, ValSamples: c.Int("val-samples")})
		if err != nil {
			return fmt.Errorf("stage: %w", err)
		}
		src, ok := task.Sources[0].(pipeline.PositionedSource)
		if !ok {
			return fmt.Errorf("stage: the data source %T cannot save its position", task.Sources[0])
		}
		cfg.Source, cfg.Val = src, task.Val
		cfg.DataDigest = stageDataDigest(info, task.Val)
		if self != 0 {
			cfg.Val.Tokens = nil
		}
		if self != S-1 {
			cfg.Val.Y = nil
		}
		slog.Info("stage data", "stage", self, "stages", S, "data", info.Source, "train_samples", info.TrainSamples, "val_samples", info.ValSamples)
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ep, closeEP, err := stageEndpoint(c, id, peers, self)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	defer closeEP()
	maxFrame, err := stageMaxFrame(cfg, M)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, c.Duration("connect-timeout"))
	link, err := quiclink.Connect(cctx, quiclink.Config{Self: self, Endpoint: ep, Peers: peers, MaxFrame: maxFrame})
	cancel()
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	defer link.Close()
	slog.Info("stage linked", "stage", self, "stages", S, "listen", ep.Addr().String(), "neighbours", quiclink.Neighbours(self, S))

	out := c.App.Writer
	jsonOut := c.Bool("json")
	cfg.Progress = func(r trainer.RoundStats) {
		eta := r.Elapsed / time.Duration(r.Round) * time.Duration(r.Rounds-r.Round)
		fmt.Fprintf(out, "round %3d/%d  train_loss %.4f  val_loss %.4f  next-char acc %5.1f%%  model %x  elapsed %s  eta %s\n",
			r.Round, r.Rounds, r.TrainLoss, r.ValLoss, 100*r.ValAccuracy, r.ModelHash[:8], r.Elapsed.Round(time.Second), eta.Round(time.Second))
	}
	sum, err := pipeline.RunProcess(ctx, link, cfg)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	// Every frame is sent and read: end the streams and let the neighbours read theirs to the end.
	sctx, scancel := context.WithTimeout(context.Background(), c.Duration("link-timeout"))
	link.Shutdown(sctx)
	scancel()
	rss := peakRSS()
	if jsonOut {
		b, err := json.Marshal(struct {
			*pipeline.ProcessSummary
			PeakRSSBytes int64 `json:"peak_rss_bytes"`
		}{sum, rss})
		if err != nil {
			return err
		}
		fmt.Fprintln(out, string(b))
		return nil
	}
	fmt.Fprintf(out, "stage %d/%d of %s: blocks [%d, %d), θ[%d:%d], %d params (%s with AdamW), %d rounds (resumed after %d), sent %s per step, busy %.0f%%, peak RSS %s, %.1fs\n",
		sum.Stage, sum.Stages, sum.Model, sum.Blocks[0], sum.Blocks[1], sum.Range[0], sum.Range[1], sum.Parameters, humanBytes(sum.StateBytes),
		sum.Rounds, sum.ResumedFrom, humanBytes(int64(sum.SentBytesPerStep)), 100*sum.Utilisation, humanBytes(rss), sum.WallSeconds)
	if sum.ModelHash != "" {
		fmt.Fprintf(out, "val_loss %.4f, next-char acc %.2f%%, model %s\n", sum.FinalValLoss, 100*sum.FinalValAccuracy, sum.ModelHash)
	}
	return nil
}

// stageEndpoint opens the stage's QUIC endpoint (on --listen-fd's socket, --listen, or its
// --peers address), admitting only the group's keys, with keep-alives that let a silent
// neighbour be noticed within --link-timeout.
func stageEndpoint(c *cli.Context, id *transport.Identity, peers []quiclink.Peer, self int) (*transport.Endpoint, func(), error) {
	allowed := map[transport.NodeID]bool{}
	for _, p := range peers {
		allowed[p.ID] = true
	}
	idle := c.Duration("link-timeout")
	tc := transport.Config{
		Identity: id,
		Allow: func(n transport.NodeID) error {
			if !allowed[n] {
				return fmt.Errorf("key %s is not a stage of this group", n)
			}
			return nil
		},
		IdleTimeout: idle,
		KeepAlive:   max(idle/4, 10*time.Millisecond),
	}
	if fd := c.Int("listen-fd"); fd > 0 {
		if fd < 3 {
			return nil, nil, fmt.Errorf("--listen-fd %d: want an inherited descriptor, 3 or more", fd)
		}
		f := os.NewFile(uintptr(fd), "listen-fd")
		defer f.Close() // FilePacketConn holds a duplicate
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--listen-fd %d: %w", fd, err)
		}
		if _, ok := pc.(*net.UDPConn); !ok {
			pc.Close()
			return nil, nil, fmt.Errorf("--listen-fd %d is not a UDP socket", fd)
		}
		ep, err := transport.Listen(pc, tc)
		if err != nil {
			pc.Close()
			return nil, nil, err
		}
		return ep, func() { ep.Close(); pc.Close() }, nil
	}
	addr := c.String("listen")
	if addr == "" {
		addr = peers[self].Addr
	}
	ep, err := transport.ListenAddr(addr, tc)
	if err != nil {
		return nil, nil, err
	}
	return ep, func() { ep.Close() }, nil
}

// stageMaxFrame is the largest frame a stage of the group may send: the bound of the largest
// stage's codecs, computed from the shape alone (every stage's frames are bounded the same way).
func stageMaxFrame(cfg pipeline.ProcessConfig, micro int) (int, error) {
	mc := cfg.Model
	T, D, V := mc.Context, mc.Embed, mc.Vocab
	codecs, err := pipeline.NewCodecs(cfg.Pipeline.Codec, mc.Batch/micro*T*D, D, V*D)
	if err != nil {
		return 0, err
	}
	if err := codecs.EnableEval(mc.Batch * T * D); err != nil {
		return 0, err
	}
	return codecs.MaxFrame(), nil
}

// stageDataDigest names the data the first and the last stage read: the training shard's
// fingerprint and the validation windows.
func stageDataDigest(info trainer.TaskInfo, val nn.Batch) [32]byte {
	h := sha256.New()
	for _, fp := range info.Fingerprints {
		h.Write(fp)
	}
	var buf [8]byte
	for _, v := range [][]int{val.Tokens, val.Y} {
		binary.LittleEndian.PutUint64(buf[:], uint64(len(v)))
		h.Write(buf[:])
		for _, x := range v {
			binary.LittleEndian.PutUint64(buf[:], uint64(x))
			h.Write(buf[:])
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
