package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer/export"
	"github.com/cohortlab/cohort/trainer/safetensors"
)

// TestExportFromCoordinator: two members train one round of a small MLP cohort on a one-node
// in-process cluster; `cohort export --coordinator` then writes the model of that closed round,
// whose hash is the one the round recorded. (About two seconds.)
func TestExportFromCoordinator(t *testing.T) {
	addr := startCoordinator(t)
	cl := cohortOf(t, addr, 100, "tiny", "mlp:784-8-10", consensus.Hyperparams{InnerSteps: 3, Rounds: 1})
	bg := context.Background()

	dir := t.TempDir()
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i, name := range []string{"bob", "carol"} {
		shard := filepath.Join(dir, name)
		if err := os.MkdirAll(shard, 0o755); err != nil {
			t.Fatal(err)
		}
		const n = 64
		r := rand.New(rand.NewPCG(uint64(i), 7))
		imgs := &datasets.Images{Name: name, Rows: 28, Cols: 28, Classes: datasets.MNISTClasses, Pixels: make([]uint8, n*28*28), Labels: make([]uint8, n)}
		for j := range imgs.Pixels {
			imgs.Pixels[j] = uint8(r.UintN(256))
		}
		for j := range imgs.Labels {
			imgs.Labels[j] = uint8(r.UintN(10))
		}
		if err := datasets.WriteImages(shard, "train", imgs); err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(dir, name+".key")
		if _, err := run(t, "keygen", "--out", key); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := newApp()
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			err := app.RunContext(ctx, []string{"cohort", "join", "--coordinator", addr, "--cohort", "1", "--key", key, "--data", shard, "--contributor", name})
			if err != nil && ctx.Err() == nil {
				t.Logf("%s: join: %v", name, err)
			}
		}()
	}
	var closed consensus.Round
	eventually(t, 120*time.Second, "round 1 closed", func() error {
		q, err := cl.Query(bg, protocol.Query{What: protocol.QueryRounds, ID: 1})
		if err != nil {
			return err
		}
		for _, r := range q.Rounds {
			if r.Status == consensus.RoundClosed {
				closed = r
				return nil
			}
		}
		return fmt.Errorf("%d rounds, none closed", len(q.Rounds))
	})
	out := filepath.Join(dir, "cohort1.safetensors")
	// The model is served to the cohort's members and coordinators only.
	if _, err := run(t, "export", "--coordinator", addr, "--cohort", "1", "--out", out); err == nil || !strings.Contains(err.Error(), "neither a member") {
		t.Fatalf("export with a throwaway key: err = %v", err)
	}
	if _, err := run(t, "export", "--coordinator", addr, "--cohort", "1", "--key", filepath.Join(dir, "bob.key"), "--out", out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	p, _, theta, err := export.Import(b, safetensors.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	h := protocol.HashParams(theta)
	if p.Spec != "mlp:784-8-10" || p.Cohort != 1 || p.Round != closed.Number || !bytes.Equal(p.ModelHash, closed.NewModelHash) || !bytes.Equal(h[:], closed.NewModelHash) {
		t.Fatalf("exported %+v, θ hash %x; round %d recorded %x", p, h[:8], closed.Number, closed.NewModelHash[:8])
	}
}
