package consensus

import (
	"errors"
	"math"
	"testing"
)

func TestParseModel(t *testing.T) {
	cases := []struct {
		spec string
		want ModelShape
	}{
		{"mlp", ModelShape{Params: 784*256 + 256 + 256*10 + 10, Layers: 2, Width: 784}},
		{"mlp:784-256-10", ModelShape{Params: 203530, Layers: 2, Width: 784}},
		{"mlp:2-3", ModelShape{Params: 9, Layers: 1, Width: 3}},
		// V·D + T·D + 4D² + D + (2DH + H + D) + D·V + V
		{"charlm:v96-t64-d64-h128", ModelShape{Params: 96*64 + 64*64 + 4*64*64 + 64 + 2*64*128 + 128 + 64 + 64*96 + 96, Layers: 1, Width: 128}},
		{"charlm:v96-t64-d64-h0-ln", ModelShape{Params: 96*64 + 64*64 + 4*64*64 + 64 + 64*96 + 96 + 4*64, Layers: 1, Width: 96}},
		// nanoGPT's GPT-2 small with a byte vocabulary: GPT-2's 124,439,808 less (50257-256)·768.
		{"gpt:12-768-12-1024", ModelShape{Params: 124_439_808 - (50257-256)*768, Layers: 12, Width: 4 * 768}},
		{"gpt:1-4-2-2", ModelShape{Params: 256*4 + 2*4 + 12*16 + 13*4 + 2*4, Layers: 1, Width: 256}},
		{"mlp:4294967296-4294967296-4294967296", ModelShape{Params: math.MaxUint64, Layers: 2, Width: 1 << 32}},
	}
	for _, tc := range cases {
		got, err := ParseModel(tc.spec)
		if err != nil || got != tc.want {
			t.Errorf("ParseModel(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	for _, spec := range []string{"", "mlp:", "mlp:10", "mlp:10-1", "mlp:-5-10", "mlp:a-b", "charlm:", "charlm:v96-t64-d64-h1",
		"charlm:v0-t64-d64-h0", "gpt:0-64-4-32", "gpt:2-64-0-32", "gpt:2-64-3-32", "gpt:2-64-4-1", "gpt:2-64-4", "gpt:4294967296-2-1-2", "vit:1"} {
		if _, err := ParseModel(spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseModel(%q): err = %v, want ErrInvalid", spec, err)
		}
	}
	l := Limits{}.Effective()
	if err := checkModel("gpt:12-768-12-1024", l); !errors.Is(err, ErrLimit) {
		t.Errorf("GPT-2 small under the default limits: %v, want ErrLimit", err)
	}
	if err := checkModel("gpt:4-256-8-256", l); err != nil {
		t.Errorf("a 3M-parameter gpt: %v", err)
	}
}
