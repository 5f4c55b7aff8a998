package compress

import (
	"encoding/hex"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenInput is a small fixed input: 40 values of a deterministic formula.
func goldenInput() []float32 {
	x := make([]float32, 40)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*0.7) * float64(1+i%5) * 0.01)
	}
	return x
}

// TestGolden pins the wire bytes of a few small messages. A failure means
// the format changed: bump Version (and keep reading the old one) or, if
// the change is intended and unreleased, run go test -run TestGolden -update.
func TestGolden(t *testing.T) {
	shape := Shape{{Offset: 2, Rows: 6, Cols: 5}}
	for _, setting := range []string{
		"fp32", "fp16", "bf16", "q8/b8", "q4/b8", "q2/b8", "q8/b16/sr", "q4/b8/clip2",
		"topk:0.25/c16", "topk:0.25/c16+q4/b8", "lowrank:2", "lowrank:2+q8/b8", "q1/b8", "topk:0.25/c16/m+q1/b8",
	} {
		cfg := Config{Setting: MustParse(setting), Seed: 7}
		if cfg.Setting.Sparsifier == LowRank || cfg.Setting.Matrices {
			cfg.Shape = shape
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := c.Encode(nil, goldenInput())
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Join("testdata", "golden", strings.NewReplacer("/", "_", ":", "_", "+", "_").Replace(setting)+".hex")
		got := hex.Dump(msg)
		if *update {
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%s: %v (run with -update to create)", setting, err)
		}
		if got != string(want) {
			t.Errorf("%s: wire bytes changed:\ngot:\n%swant:\n%s", setting, got, want)
		}
		// The golden message still decodes to what the current decoder makes of it.
		if _, err := c.Decode(nil, msg); err != nil {
			t.Errorf("%s: %v", setting, err)
		}
	}
}
