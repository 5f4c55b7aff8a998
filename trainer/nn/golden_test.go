package nn

import (
	"bytes"
	"flag"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// TestInitGolden pins the layouts and the exact initial parameters (by hash) of reference
// configurations. Replicas of a cohort build their models independently from (name, seed) and must
// agree bit for bit, across versions of this package too: a change here is a protocol change.
func TestInitGolden(t *testing.T) {
	var buf bytes.Buffer
	models := []Model{
		newTestMLP(t, MLPConfig{}),
		newTestMLP(t, MLPConfig{Sizes: []int{784, 128, 64, 10}, Seed: 7}),
		newTestCharLM(t, CharLMConfig{Vocab: 96}),
		newTestCharLM(t, CharLMConfig{Vocab: 65, Context: 32, Embed: 48, Hidden: -1, Seed: 7}),
		newTestCharLM(t, CharLMConfig{Vocab: 65, Context: 32, Embed: 32, Seed: 8, LayerNorm: true}),
	}
	for _, m := range models {
		fmt.Fprintf(&buf, "%s params=%d\n", m.Name(), len(m.Params()))
		for _, ten := range m.Layout() {
			p := m.Params()[ten.Offset : ten.Offset+ten.Size()]
			h := fnv.New64a()
			var sum float64
			for _, v := range p {
				b := math.Float32bits(v)
				h.Write([]byte{byte(b), byte(b >> 8), byte(b >> 16), byte(b >> 24)})
				sum += float64(v) * float64(v)
			}
			fmt.Fprintf(&buf, "  %-8s %-10s offset=%-7d rms=%.6f fnv64a=%016x\n", ten.Name, fmt.Sprint(ten.Shape), ten.Offset,
				math.Sqrt(sum/float64(len(p))), h.Sum64())
		}
	}
	path := filepath.Join("testdata", "init.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("initial parameters changed; got\n%s\nwant\n%s", buf.Bytes(), want)
	}
}
