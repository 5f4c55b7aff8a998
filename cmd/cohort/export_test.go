package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/export"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/safetensors"
)

// writeCheckpoint saves a checkpoint of a freshly initialised model of spec.
func writeCheckpoint(t *testing.T, dir, spec string) (string, []float32) {
	t.Helper()
	m, err := nn.NewFromName(spec, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	theta := slices.Clone(m.Params())
	z := make([]float32, len(theta))
	ck := &trainer.Checkpoint{Cohort: 5, Round: 12, Theta: theta, Momentum: z, Residual: z, AdamM: z, AdamV: z, AdamT: 9}
	path := filepath.Join(dir, "peer.ckpt")
	if err := trainer.SaveCheckpoint(path, ck); err != nil {
		t.Fatal(err)
	}
	return path, theta
}

func TestExportFromCheckpointRoundTrips(t *testing.T) {
	dir := t.TempDir()
	const spec = "mlp:6-5-3"
	ckpt, theta := writeCheckpoint(t, dir, spec)
	out := filepath.Join(dir, "model.safetensors")
	msg, err := run(t, "export", "--checkpoint", ckpt, "--model", spec, "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "exported mlp:6-5-3 (cohort 5, round 12") {
		t.Errorf("output %q", msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// The file decodes, re-encodes to the same bytes, and imports back to θ.
	f, err := safetensors.Decode(b, safetensors.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := safetensors.Encode(f.Tensors, f.Metadata)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("Encode(Decode(file)) differs (%v)", err)
	}
	p, _, got, err := export.Import(b, safetensors.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	h := protocol.HashParams(theta)
	if !slices.Equal(got, theta) || p.Spec != spec || p.Cohort != 5 || p.Round != 12 || !bytes.Equal(p.ModelHash, h[:]) {
		t.Fatalf("imported %+v", p)
	}
	// The provenance file says the same.
	js, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	var q export.Provenance
	if err := json.Unmarshal(js, &q); err != nil || q.Spec != spec || q.Round != 12 || !bytes.Equal(q.ModelHash, h[:]) {
		t.Fatalf("provenance %s (%v)", js, err)
	}
	// A second export is byte-identical.
	out2 := filepath.Join(dir, "again.safetensors")
	if _, err := run(t, "export", "--checkpoint", ckpt, "--model", spec, "--out", out2); err != nil {
		t.Fatal(err)
	}
	b2, _ := os.ReadFile(out2)
	if !bytes.Equal(b2, b) {
		t.Fatal("re-export differs")
	}
}

func TestExportRefuses(t *testing.T) {
	dir := t.TempDir()
	ckpt, _ := writeCheckpoint(t, dir, "mlp:6-5-3")
	out := filepath.Join(dir, "m.safetensors")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--out", out}, "give --checkpoint"},
		{[]string{"--out", out, "--checkpoint", ckpt}, "needs --model"},
		{[]string{"--out", out, "--checkpoint", ckpt, "--model", "mlp:6-5-4"}, "wrong --model"},
		{[]string{"--out", out, "--checkpoint", ckpt, "--model", "charlm:v96-t64-d64-h128"}, "only mlp"},
		{[]string{"--out", out, "--checkpoint", ckpt, "--coordinator", "127.0.0.1:1"}, "not both"},
		{[]string{"--out", out, "--checkpoint", ckpt, "--model", "mlp:6-5-3", "--cohort", "1"}, "--cohort goes with"},
		{[]string{"--out", out, "--coordinator", "127.0.0.1:1"}, "--cohort must be"},
		{[]string{"--out", out, "--coordinator", "127.0.0.1:1", "--cohort", "1", "--model", "mlp:6-5-3"}, "--model goes with"},
		{[]string{"--out", filepath.Join(dir, "m.json"), "--checkpoint", ckpt, "--model", "mlp:6-5-3"}, "ending in .safetensors"},
		{[]string{"--out", out, "--checkpoint", filepath.Join(dir, "none"), "--model", "mlp:6-5-3"}, "no such file"},
	} {
		_, err := run(t, append([]string{"export"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.msg) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v, want one line mentioning %q", c.args, err, c.msg)
		}
	}
}

func TestLastClosed(t *testing.T) {
	h := []byte{1}
	rounds := []consensus.Round{
		{Cohort: 1, Number: 1, Status: consensus.RoundClosed, NewModelHash: h},
		{Cohort: 1, Number: 3, Status: consensus.RoundOpen},
		{Cohort: 1, Number: 2, Status: consensus.RoundClosed, NewModelHash: h},
		{Cohort: 2, Number: 9, Status: consensus.RoundClosed, NewModelHash: h},
	}
	for _, c := range []struct {
		rounds []consensus.Round
		id     uint64
		want   uint32
		err    string
	}{
		{rounds, 1, 2, ""},
		{rounds, 2, 9, ""},
		{rounds[1:2], 1, 0, "no closed round"},
		{nil, 1, 0, "no closed round"},
	} {
		r, err := lastClosed(c.rounds, c.id)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("cohort %d: err = %v, want %q", c.id, err, c.err)
			}
			continue
		}
		if err != nil || r.Number != c.want {
			t.Errorf("cohort %d: round %d (%v), want %d", c.id, r.Number, err, c.want)
		}
	}
}
