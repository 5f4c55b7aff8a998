package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/atomicfile"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/export"
	"github.com/cohortlab/cohort/transport"
)

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write a trained model as a PyTorch-loadable .safetensors file and a .json provenance file",
		Description: `Exports θ either from a peer's checkpoint (--checkpoint FILE --model SPEC) or from a
   cohort (--coordinator ADDR --cohort ID): the model after the cohort's last closed round,
   fetched from a coordinator and checked against the model hash the cohort recorded
   (--key: a member's key, as coordinators serve a cohort's model to its members only).
   The MLP is written as nn.Sequential's state dict ("0.weight" [out, in], "0.bias", ...),
   the GPT as nanoGPT's (Linear weights transposed to [out, in], lm_head.weight tied to
   transformer.wte.weight). The provenance (spec, cohort, round, model hash) goes into the
   file's metadata and into OUT with the extension .json. scripts/check-export.py loads the
   file into PyTorch strictly.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Required: true, Usage: "the .safetensors file to write", EnvVars: envVars("out")},
			&cli.StringFlag{Name: "checkpoint", Usage: "a peer's checkpoint file to export", EnvVars: envVars("checkpoint")},
			&cli.StringFlag{Name: "model", Usage: "the checkpoint's model spec, e.g. mlp:784-256-10 or gpt:4-128-4-64", EnvVars: envVars("model")},
			&cli.StringFlag{Name: "coordinator", Usage: "coordinator address(es), comma-separated, to export a cohort's model", EnvVars: envVars("coordinator")},
			&cli.Uint64Flag{Name: "cohort", Usage: "cohort ID (with --coordinator)", EnvVars: envVars("cohort")},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "give up after this long (with --coordinator)", EnvVars: envVars("timeout")},
			&cli.StringFlag{Name: "key", Usage: "member key file (from cohort keygen): a cohort's model is served to its members and coordinators only", EnvVars: envVars("key")},
		},
		Action: runExport,
	}
}

func runExport(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("export: unexpected argument %q", c.Args().First())
	}
	ckpt, coord := c.String("checkpoint"), c.String("coordinator")
	var (
		p     export.Provenance
		theta []float32
		err   error
	)
	switch {
	case ckpt != "" && coord != "":
		return errors.New("export: give either --checkpoint or --coordinator, not both")
	case ckpt != "":
		if c.IsSet("cohort") {
			return errors.New("export: --cohort goes with --coordinator; a checkpoint names its cohort")
		}
		p, theta, err = fromCheckpoint(ckpt, c.String("model"))
	case coord != "":
		if c.IsSet("model") {
			return errors.New("export: --model goes with --checkpoint; a cohort's proposal names its model")
		}
		if c.Uint64("cohort") == 0 {
			return errors.New("export: --cohort must be a cohort ID (1 or more)")
		}
		p, theta, err = fromCohort(c, c.Uint64("cohort"))
	default:
		return errors.New("export: give --checkpoint FILE --model SPEC, or --coordinator ADDR --cohort ID")
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	out := c.String("out")
	paths, err := writeExport(out, p, theta)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "exported %s (cohort %d, round %d, model %x) to %s and %s\n", p.Spec, p.Cohort, p.Round, p.ModelHash[:min(len(p.ModelHash), 8)], paths[0], paths[1])
	return nil
}

// fromCheckpoint reads θ and its cohort and round from a peer's checkpoint.
func fromCheckpoint(path, spec string) (export.Provenance, []float32, error) {
	if spec == "" {
		return export.Provenance{}, nil, errors.New("--checkpoint needs --model SPEC (the model the cohort trains)")
	}
	l, err := export.LayoutFor(spec)
	if err != nil {
		return export.Provenance{}, nil, fmt.Errorf("--model: %w", err)
	}
	ck, err := trainer.LoadCheckpoint(path)
	if err != nil {
		return export.Provenance{}, nil, err
	}
	if len(ck.Theta) != l.Size() {
		return export.Provenance{}, nil, fmt.Errorf("checkpoint %s holds %d parameters, %s has %d: wrong --model?", path, len(ck.Theta), spec, l.Size())
	}
	h := protocol.HashParams(ck.Theta)
	return export.Provenance{Spec: spec, Cohort: ck.Cohort, Round: ck.Round, ModelHash: h[:]}, ck.Theta, nil
}

// fromCohort fetches the cohort's model after its last closed round from a coordinator, checked
// against the model hash the cohort's replicated state recorded.
func fromCohort(c *cli.Context, id uint64) (export.Provenance, []float32, error) {
	if d := c.Duration("timeout"); d <= 0 {
		return export.Provenance{}, nil, fmt.Errorf("--timeout %s: want a positive duration, e.g. 2m", d)
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	cl, err := dialClient(c)
	if err != nil {
		return export.Provenance{}, nil, err
	}
	defer cl.Close()
	q := func(what string, id uint64) (protocol.QueryReply, error) {
		r, err := cl.Query(ctx, protocol.Query{What: what, ID: id, Linearizable: true})
		if err != nil {
			return r, fmt.Errorf("query %s: %w", what, err)
		}
		return r, nil
	}
	cr, err := q(protocol.QueryCohort, id)
	if err != nil {
		return export.Provenance{}, nil, err
	}
	if cr.Cohort == nil {
		return export.Provenance{}, nil, fmt.Errorf("cohort %d: empty answer", id)
	}
	pr, err := q(protocol.QueryProposal, cr.Cohort.Proposal)
	if err != nil {
		return export.Provenance{}, nil, err
	}
	if len(pr.Proposals) != 1 {
		return export.Provenance{}, nil, fmt.Errorf("proposal %d: %d answers", cr.Cohort.Proposal, len(pr.Proposals))
	}
	spec := pr.Proposals[0].Model
	l, err := export.LayoutFor(spec)
	if err != nil {
		return export.Provenance{}, nil, fmt.Errorf("cohort %d trains %q: %w", id, spec, err)
	}
	// The last closed round is the current one or the one before it: read just those two.
	rr, err := cl.Query(ctx, protocol.Query{What: protocol.QueryRounds, ID: id, Linearizable: true,
		Offset: max(cr.Cohort.CurrentRound, 2) - 2, Limit: 2})
	if err != nil {
		return export.Provenance{}, nil, fmt.Errorf("query rounds: %w", err)
	}
	last, err := lastClosed(rr.Rounds, id)
	if err != nil {
		return export.Provenance{}, nil, err
	}
	theta, err := fetchModel(ctx, cl, id, last.NewModelHash, l.Size())
	if err != nil {
		return export.Provenance{}, nil, err
	}
	return export.Provenance{Spec: spec, Cohort: id, Round: last.Number, ModelHash: last.NewModelHash}, theta, nil
}

// lastClosed returns the cohort's closed round with the highest number.
func lastClosed(rounds []consensus.Round, id uint64) (consensus.Round, error) {
	var last *consensus.Round
	for i := range rounds {
		r := &rounds[i]
		if r.Cohort == id && r.Status == consensus.RoundClosed && len(r.NewModelHash) > 0 && (last == nil || r.Number > last.Number) {
			last = r
		}
	}
	if last == nil {
		return consensus.Round{}, fmt.Errorf("cohort %d has no closed round yet: nothing trained to export", id)
	}
	return *last, nil
}

// fetchModel asks each coordinator in turn for the cohort's model (MsgModel), takes the first
// whose reply is the model wanted (ModelReply.Want) and whose blob hashes to it (DecodeModel).
func fetchModel(ctx context.Context, cl *client.Client, id uint64, hash []byte, n int) ([]float32, error) {
	st, err := cl.Query(ctx, protocol.Query{What: protocol.QueryStatus})
	if err != nil {
		return nil, fmt.Errorf("query status: %w", err)
	}
	if st.Status == nil || len(st.Status.Servers) == 0 {
		return nil, errors.New("the coordinator's status names no servers")
	}
	req := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
	if err := req.SetBody(protocol.ModelRequest{Cohort: id}); err != nil {
		return nil, err
	}
	var errs []error
	for _, sv := range st.Status.Servers {
		reply, err := cl.CallAt(ctx, sv.Addr, req)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sv.ID, err))
			continue
		}
		var mr protocol.ModelReply
		if err := reply.DecodeBody(&mr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sv.ID, err))
			continue
		}
		if err := mr.Want(n, hash); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sv.ID, err))
			continue
		}
		blob, err := cl.FetchBlob(ctx, sv.Addr, transport.Hash(mr.Root), int64(8*n), 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("fetching the model from %s: %w", sv.ID, err))
			continue
		}
		theta, _, err := protocol.DecodeModel(blob, n, hash)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sv.ID, err))
			continue
		}
		return theta, nil
	}
	return nil, fmt.Errorf("no coordinator served the model of hash %x: %w", hash[:min(len(hash), 8)], errors.Join(errs...))
}

// provenancePath is where the provenance JSON of an export to out goes: out with extension .json.
func provenancePath(out string) string {
	return strings.TrimSuffix(out, filepath.Ext(out)) + ".json"
}

// writeExport writes the .safetensors file and its .json provenance, each atomically.
func writeExport(out string, p export.Provenance, theta []float32) ([2]string, error) {
	paths := [2]string{out, provenancePath(out)}
	if paths[0] == paths[1] {
		return paths, fmt.Errorf("--out %s: want a file name ending in .safetensors", out)
	}
	l, err := export.LayoutFor(p.Spec)
	if err != nil {
		return paths, err
	}
	b, err := export.Export(p, l, theta)
	if err != nil {
		return paths, err
	}
	js, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return paths, err
	}
	if err := atomicfile.Write(paths[0], b, 0o644); err != nil {
		return paths, err
	}
	return paths, atomicfile.Write(paths[1], append(js, '\n'), 0o644)
}
