package peer

import (
	"errors"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer"
)

// TestImagesFit: images the model cannot train on are refused with the shape found and the shape
// the model needs; images that fit pass.
func TestImagesFit(t *testing.T) {
	imgs := func(rows, cols int, labels ...uint8) *datasets.Images {
		return &datasets.Images{Name: "shard", Rows: rows, Cols: cols, Classes: datasets.MNISTClasses,
			Pixels: make([]uint8, len(labels)*rows*cols), Labels: labels}
	}
	for _, tc := range []struct {
		model string
		imgs  *datasets.Images
		want  string // "" = fits
	}{
		{"mlp:784-256-10", imgs(28, 28, 0, 9, 3), ""},
		{"mlp", imgs(28, 28, 0, 9), ""},
		{"mlp:100-16-10", imgs(10, 10, 0, 9), ""},
		{"mlp:784-16-12", imgs(28, 28, 0, 9), ""}, // more classes than labels: trainable
		{"mlp:784-256-10", imgs(10, 10, 0, 9), "10x10 images (100 features), the model mlp:784-256-10 takes 28x28 images (784 features)"},
		{"mlp:784-256-10", imgs(28, 27, 0), "28x27 images (756 features)"},
		{"mlp:50-8-10", imgs(28, 28, 0), "takes 50 features per sample"},
		{"mlp:784-16-5", imgs(28, 28, 0, 7), "labels up to 7, the model mlp:784-16-5 has 5 classes"},
		{"charlm", imgs(28, 28, 0), "does not take images (it trains on text), these are 28x28 images"},
	} {
		model, err := trainer.NewModel(tc.model, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		err = ImagesFit(model, tc.imgs)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s, %dx%d: %v", tc.model, tc.imgs.Rows, tc.imgs.Cols, err)
			}
			continue
		}
		if !errors.Is(err, ErrDataMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s, %dx%d: error %v, want ErrDataMismatch containing %q", tc.model, tc.imgs.Rows, tc.imgs.Cols, err, tc.want)
		}
	}
}

// TestTextFits: a text shard is for byte-level language models only, and must hold one window.
func TestTextFits(t *testing.T) {
	for _, tc := range []struct {
		model string
		size  int
		want  string // "" = fits
	}{
		{"gpt:1-32-2-32", 33, ""},
		{"gpt:1-32-2-32", 1 << 20, ""},
		{"gpt:1-32-2-32", 32, "32 bytes of text, the model gpt:1-32-2-32 needs at least 33 (one window of its context 32 plus the next byte)"},
		{"gpt:1-16-2-64", 10, "needs at least 65"},
		{"mlp:784-256-10", 5000, "mlp:784-256-10 does not take text (it trains on images), this is 5000 bytes of text"},
		{"charlm", 5000, "not bytes: text shards train byte-level models (vocabulary 256)"},
	} {
		model, err := trainer.NewModel(tc.model, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		err = TextFits(model, tc.size)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s, %d bytes: %v", tc.model, tc.size, err)
			}
			continue
		}
		if !errors.Is(err, ErrDataMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s, %d bytes: error %v, want ErrDataMismatch containing %q", tc.model, tc.size, err, tc.want)
		}
	}
}

// TestTextSamples: a text shard registers its non-overlapping windows, as a text task counts them.
func TestTextSamples(t *testing.T) {
	for _, tc := range []struct {
		size, context int
		want          uint64
	}{
		{33, 32, 1}, {64, 32, 2}, {1000, 64, 15}, {31, 32, 0}, {0, 32, 0}, {100, 0, 0}, {-5, 8, 0},
	} {
		if got := TextSamples(tc.size, tc.context); got != tc.want {
			t.Errorf("TextSamples(%d, %d) = %d, want %d", tc.size, tc.context, got, tc.want)
		}
	}
}

// TestBindText: every shard registers its own fingerprint and windows, the source draws from all
// of the text, and a shard the model cannot train on is named in the refusal.
func TestBindText(t *testing.T) {
	doc := func(name string, n int) datasets.Document {
		return datasets.Document{Name: name, Text: strings.Repeat("ROMEO:\nabc déf\n\n", n)[:n]}
	}
	alice := TextShard{Contributor: "alice", Path: "shards/peer-1", Docs: []datasets.Document{doc("a.txt", 100), doc("b.txt", 60)}}
	bob := TextShard{Contributor: "bob", Path: "shards/peer-2/bob.txt", Docs: []datasets.Document{doc("bob.txt", 70)}}
	gpt, err := trainer.NewModel("gpt:1-32-2-32", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	src, cs, err := BindText([]TextShard{alice, bob}, 3)(gpt)
	if err != nil {
		t.Fatal(err)
	}
	if src.Len() != 160+70-32 {
		t.Errorf("source of %d windows, want %d", src.Len(), 160+70-32)
	}
	for i, want := range []struct {
		name    string
		samples uint64
		shard   TextShard
	}{{"alice", 5, alice}, {"bob", 2, bob}} {
		fp := datasets.TextFingerprint(want.shard.Docs)
		if cs[i].Name != want.name || cs[i].Samples != want.samples || string(cs[i].Fingerprint) != string(fp.Digest[:]) {
			t.Errorf("contributor %d: %+v, want %s with %d samples", i, cs[i], want.name, want.samples)
		}
	}
	for _, tc := range []struct {
		model  string
		shards []TextShard
		want   string
	}{
		{"gpt:1-32-2-32", []TextShard{alice, {Contributor: "carol", Path: "carol.txt", Docs: []datasets.Document{doc("c.txt", 20)}}}, "carol.txt: data does not fit the model: 20 bytes"},
		{"mlp:784-16-10", []TextShard{alice}, "shards/peer-1: data does not fit the model: mlp:784-16-10 does not take text"},
		{"gpt:1-32-2-32", nil, "no text shards"},
	} {
		model, err := trainer.NewModel(tc.model, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = BindText(tc.shards, 1)(model)
		if !errors.Is(err, ErrDataMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want ErrDataMismatch containing %q", tc.model, err, tc.want)
		}
	}
}
