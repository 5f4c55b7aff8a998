package main

import (
	"fmt"
	"github.com/cohortlab/cohort/client"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/peer"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/transport"
)

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:  "join",
		Usage: "join a training cohort with your data and train until its last round",
		Description: `Each --data is a training shard and belongs to the --contributor named at the same position.
   A shard is either a Fashion-MNIST-format directory (train-images-idx3-ubyte.gz and
   train-labels-idx1-ubyte.gz), for image models, or UTF-8 text — a .txt file or a directory of
   .txt files — for byte-level language models (gpt:L-D-NH-T); cohort shard writes both. Every
   --data of one member is of one kind. The whole of a text shard trains (the cohort's validation
   text is held by the coordinators); it registers one sample per context-length window. Data the
   cohort's model cannot train on is refused before the join is committed. The data never leaves
   this machine: only compressed pseudo-gradients do.

   Examples:
     cohort join --coordinator 127.0.0.1:7001 --cohort 1 --key alice.key --data ./alice --contributor alice
     cohort join --coordinator 127.0.0.1:7001 --cohort 2 --key bob.key --data shards/peer-2 --contributor bob`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "coordinator", Required: true, Usage: "coordinator address(es), comma-separated", EnvVars: envVars("coordinator")},
			&cli.Uint64Flag{Name: "cohort", Required: true, Usage: "cohort ID", EnvVars: envVars("cohort")},
			&cli.StringFlag{Name: "key", Required: true, Usage: "member key file (cohort keygen)", EnvVars: envVars("key")},
			&cli.StringSliceFlag{Name: "data", Required: true, Usage: "training shard: an image directory, or a .txt file or directory of .txt files (repeatable)", EnvVars: envVars("data")},
			&cli.StringSliceFlag{Name: "contributor", Required: true, Usage: "contributor of the --data at the same position (repeatable)", EnvVars: envVars("contributor")},
			&cli.StringFlag{Name: "member-name", Usage: "member name (default: the key file's base name)", EnvVars: envVars("member_name")},
			&cli.IntFlag{Name: "batch", Usage: "batch size (0: the model's default; an update weighs at most H × the model's default in the aggregate)", EnvVars: envVars("batch")},
			&cli.IntFlag{Name: "overlap", Usage: "inner steps τ to take while the update travels (overlaps communication with compute; 0: none)", EnvVars: envVars("overlap")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the batch order", EnvVars: envVars("seed")},
			&cli.StringFlag{Name: "checkpoint", Usage: "file to save progress to after every round and resume from on restart", EnvVars: envVars("checkpoint")},
		},
		Action: runJoin,
	}
}

func runJoin(c *cli.Context) error {
	dirs, names := c.StringSlice("data"), c.StringSlice("contributor")
	if len(dirs) != len(names) {
		return fmt.Errorf("join: %d --data but %d --contributor: give one contributor per data directory", len(dirs), len(names))
	}
	if c.NArg() > 0 {
		return fmt.Errorf("join: unexpected argument %q", c.Args().First())
	}
	if err := checkFlags(c, "join", between("cohort", 1, math.MaxUint64), batchBound("batch"), between("overlap", 0, maxInnerSteps-1)); err != nil {
		return err
	}
	addrs, err := coordinatorAddrs(c)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	text, err := textShards(dirs)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	cfg := peer.Config{Cohort: c.Uint64("cohort"), Batch: c.Int("batch"), Checkpoint: c.String("checkpoint"), Overlap: c.Int("overlap")}
	if text {
		var shards []peer.TextShard
		for i, path := range dirs {
			docs, err := loadTexts(path)
			if err != nil {
				return fmt.Errorf("join: --data %s: %w", path, err)
			}
			shards = append(shards, peer.TextShard{Contributor: names[i], Path: "--data " + path, Docs: docs})
		}
		// A text shard's windows and samples depend on the cohort's model: Join binds (and
		// checks) them once it knows the model, before anything is committed.
		cfg.Bind = peer.BindText(shards, c.Uint64("seed"))
	} else if cfg.Source, cfg.Contributors, cfg.Fits, err = imageShards(dirs, names, c.Uint64("seed")); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	id, err := transport.LoadKey(c.String("key"))
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	cl, err := client.Dial(client.Config{Addrs: addrs, Identity: id})
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	defer cl.Close()
	cfg.Client = cl
	cfg.Name = c.String("member-name")
	if cfg.Name == "" {
		cfg.Name = trimExt(filepath.Base(c.String("key")))
	}
	out := c.App.Writer
	cfg.OnRound = func(r peer.Report) {
		state := "applied"
		if !r.Applied {
			state = "abandoned"
		}
		fmt.Fprintf(out, "round %3d/%d  %s  train_loss %.4f  samples %d  sent %s  compute %.1fs of %.1fs  model %x\n",
			r.Round, r.Rounds, state, r.TrainLoss, r.Samples, humanBytes(int64(r.PayloadBytes)), r.ComputeSeconds, r.RoundSeconds, r.ModelHash[:6])
	}
	p, err := peer.New(cfg)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Join(ctx); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	var samples uint64
	for _, ct := range p.Contributors() {
		samples += ct.Samples
	}
	fmt.Fprintf(out, "joined cohort %d as %s (%s) with %d samples from %v\n", cfg.Cohort, cfg.Name, cl.ID(), samples, names)
	if p.Resumed {
		fmt.Fprintf(out, "resumed from checkpoint %s\n", cfg.Checkpoint)
	}
	if err := p.Run(ctx); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	final := protocol.HashParams(p.Worker().Global())
	fmt.Fprintf(out, "cohort %d done: %d rounds, %d samples, %s sent, final model %x\n", cfg.Cohort, p.Stats.Rounds, p.Stats.Samples,
		humanBytes(p.Stats.PayloadBytes), final[:8])
	return nil
}

// textShards reports whether the --data paths are text shards (a .txt file or a directory of
// .txt files, as cohort shard writes for text) or image shards; a mix is an error.
func textShards(paths []string) (bool, error) {
	text := false
	for i, path := range paths {
		t := isTextData(path)
		if i > 0 && t != text {
			kind := func(t bool) string {
				if t {
					return "a text shard"
				}
				return "an image shard"
			}
			return false, fmt.Errorf("--data %s is %s but --data %s is %s: a member trains one kind of data", paths[0], kind(text), path, kind(t))
		}
		text = t
	}
	return text, nil
}

// loadTexts loads the text shard at path (a file or a directory of .txt files).
func loadTexts(path string) ([]datasets.Document, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return datasets.LoadTexts(os.DirFS(filepath.Dir(abs)), filepath.Base(abs))
}

// imageShards loads the image shards at dirs, one per contributor: the source over all their
// images (seeded), the contributors with their fingerprints and samples, and the check that the
// cohort's model takes them.
func imageShards(dirs, names []string, seed uint64) (trainer.Source, []peer.Contributor, func(nn.Model) error, error) {
	var all *datasets.Images
	var shards []*datasets.Images
	var contributors []peer.Contributor
	for i, dir := range dirs {
		imgs, err := datasets.LoadImages(os.DirFS(dir), "train")
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--data %s: %w", dir, err)
		}
		shards = append(shards, imgs)
		idx := make([]int, imgs.Len())
		for j := range idx {
			idx[j] = j
		}
		fp := datasets.NewFingerprint(imgs.SampleHashes(idx))
		contributors = append(contributors, peer.Contributor{Name: names[i], Fingerprint: fp.Digest[:], Samples: uint64(imgs.Len())})
		if all == nil {
			all = imgs
			continue
		}
		if imgs.Rows != all.Rows || imgs.Cols != all.Cols || imgs.Classes != all.Classes {
			return nil, nil, nil, fmt.Errorf("--data %s holds %dx%d images of %d classes, %s holds %dx%d of %d", dir, imgs.Rows, imgs.Cols, imgs.Classes, dirs[0], all.Rows, all.Cols, all.Classes)
		}
		all = &datasets.Images{Name: all.Name + "+" + imgs.Name, Rows: all.Rows, Cols: all.Cols, Classes: all.Classes,
			Pixels: append(append([]uint8(nil), all.Pixels...), imgs.Pixels...), Labels: append(append([]uint8(nil), all.Labels...), imgs.Labels...)}
	}
	idx := make([]int, all.Len())
	for j := range idx {
		idx[j] = j
	}
	src, err := trainer.NewImageSource(all, idx, seed)
	if err != nil {
		return nil, nil, nil, err
	}
	// The cohort's model must take these images: checked before the join is committed.
	fits := func(model nn.Model) error {
		for i, imgs := range shards {
			if err := peer.ImagesFit(model, imgs); err != nil {
				return fmt.Errorf("--data %s: %w", imagesFile(dirs[i]), err)
			}
		}
		return nil
	}
	return src, contributors, fits, nil
}

// imagesFile names the training images file of a shard directory, as datasets.LoadImages finds it.
func imagesFile(dir string) string {
	gz := filepath.Join(dir, "train-images-idx3-ubyte.gz")
	if _, err := os.Stat(gz); err == nil {
		return gz
	}
	return filepath.Join(dir, "train-images-idx3-ubyte")
}

func shardCommand() *cli.Command {
	return &cli.Command{
		Name:  "shard",
		Usage: "split Fashion-MNIST or a text (FILE or DIR of .txt) into per-peer training shards (directories for cohort join)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Required: true, Usage: "directory to write OUT/peer-1, OUT/peer-2, ...", EnvVars: envVars("out")},
			&cli.IntFlag{Name: "peers", Value: 4, Usage: "number of shards", EnvVars: envVars("peers")},
			&cli.StringFlag{Name: "partition", Value: "iid", Usage: "images: iid, dirichlet:ALPHA or dirichlet-equal:ALPHA; text: iid, iid:CHUNK, contiguous, speaker or play", EnvVars: envVars("partition")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "partition seed", EnvVars: envVars("seed")},
			&cli.StringFlag{Name: "data", Value: "embedded", Usage: "Fashion-MNIST directory, or embedded; or a text file or directory of .txt files", EnvVars: envVars("data")},
		},
		Action: func(c *cli.Context) error {
			if err := checkFlags(c, "shard", between("peers", 1, maxWorkers)); err != nil {
				return err
			}
			if isTextData(c.String("data")) {
				return shardText(c)
			}
			_, info, err := trainer.BuildTask(trainer.TaskSpec{Model: "mlp", Workers: c.Int("peers"), Partition: c.String("partition"),
				Seed: c.Uint64("seed"), DataDir: c.String("data")})
			if err != nil {
				return fmt.Errorf("shard: %w", err)
			}
			train, _, _, err := trainer.LoadFashionMNIST(c.String("data"))
			if err != nil {
				return fmt.Errorf("shard: %w", err)
			}
			for i, idx := range info.Shards {
				dir := filepath.Join(c.String("out"), fmt.Sprintf("peer-%d", i+1))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return fmt.Errorf("shard: %w", err)
				}
				if err := datasets.WriteImages(dir, "train", train.Subset(filepath.Base(dir), idx)); err != nil {
					return fmt.Errorf("shard: %w", err)
				}
				fmt.Fprintf(c.App.Writer, "%s: %d samples\n", dir, len(idx))
			}
			return nil
		},
	}
}
