package compress

import (
	"errors"
	"fmt"
	"testing"
)

func TestParseString(t *testing.T) {
	cases := []struct {
		in, canonical string
		want          Setting
	}{
		{"fp32", "fp32", Setting{}},
		{"fp16", "fp16", Setting{Format: FP16}},
		{"bf16", "bf16", Setting{Format: BF16}},
		{"q8", "q8", Setting{Format: Q8}},
		{"int8", "q8", Setting{Format: Q8}},
		{"q4/b64", "q4", Setting{Format: Q4, Block: 64}},
		{"q4/b128", "q4/b128", Setting{Format: Q4, Block: 128}},
		{"q2/b16/clip3/sr", "q2/b16/clip3/sr", Setting{Format: Q2, Block: 16, Clip: 3, Stochastic: true}},
		{"q8/sr/clip2.5", "q8/clip2.5/sr", Setting{Format: Q8, Clip: 2.5, Stochastic: true}},
		{"topk:0.01", "topk:0.01", Setting{Sparsifier: TopK, Fraction: 0.01}},
		{"topk:1e-3/c65536+int4", "topk:0.001/c65536+q4", Setting{Sparsifier: TopK, Fraction: 0.001, Chunk: 65536, Format: Q4}},
		{"topk:0.01/c4096+fp32", "topk:0.01", Setting{Sparsifier: TopK, Fraction: 0.01, Chunk: 4096}},
		{"topk:0.05+int8", "topk:0.05+q8", Setting{Sparsifier: TopK, Fraction: 0.05, Format: Q8}},
		{"lowrank:4", "lowrank:4", Setting{Sparsifier: LowRank, Rank: 4}},
		{"lowrank:4/i1+q8", "lowrank:4+q8", Setting{Sparsifier: LowRank, Rank: 4, Iters: 1, Format: Q8}},
		{"lowrank:2/i3+bf16+zstd", "lowrank:2/i3+bf16+zstd", Setting{Sparsifier: LowRank, Rank: 2, Iters: 3, Format: BF16, Zstd: true}},
		{"zstd", "fp32+zstd", Setting{Zstd: true}},
		{"topk:0.01+zstd", "topk:0.01+zstd", Setting{Sparsifier: TopK, Fraction: 0.01, Zstd: true}},
	}
	for _, tc := range cases {
		s, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if s != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, s, tc.want)
		}
		if got := s.String(); got != tc.canonical {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.canonical)
		}
		s2, err := Parse(s.String())
		if err != nil || !s2.Equal(s) || s2.String() != s.String() {
			t.Errorf("Parse(%q) = %+v, %v; does not round-trip %+v", s.String(), s2, err, s)
		}
	}
	for _, in := range suite {
		s := MustParse(in)
		if s.String() != in {
			t.Errorf("suite setting %q is not canonical: %q", in, s.String())
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"", "fp64", "q3", "q8/b12", "q8/b0", "q8/b131072", "q8/clip0", "q8/clip-1", "q8/clipNaN", "q8/b64/b64",
		"q8/sr/sr", "q8/x", "fp16/b64", "fp32:1", "topk", "topk:", "topk:0", "topk:1.5", "topk:NaN", "topk:-0.1",
		"topk:0.1/c1", "topk:0.1/c0x10", "topk:0.1/i2", "lowrank:0", "lowrank:x", "lowrank:2/i0", "lowrank:2/i17",
		"q8+topk:0.1", "topk:0.1+lowrank:2", "zstd+q8", "q8+q4", "zstd+zstd", "q8+", "+q8", "zstd/x",
		"topk:0.1+q4+zstd+zstd", "lowrank:2000",
	} {
		if s, err := Parse(in); !errors.Is(err, ErrSetting) {
			t.Errorf("Parse(%q) = %+v, %v; want an ErrSetting", in, s, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range suite {
		f.Add(s)
	}
	f.Add("topk:1e-3/c65536+int4+zstd")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		str := s.String()
		s2, err := Parse(str)
		if err != nil {
			t.Fatalf("Parse(%q) ok but Parse(String() = %q): %v", in, str, err)
		}
		if !s2.Equal(s) || s2.String() != str {
			t.Fatalf("%q → %q → %q", in, str, s2.String())
		}
		if _, err := New(Config{Setting: s, Shape: Shape{{Offset: 0, Rows: 4, Cols: 4}}}); err != nil {
			t.Fatalf("New(%q): %v", str, err)
		}
	})
}

func ExampleParse() {
	for _, in := range []string{"q4/b64", "topk:1e-2+int4", "lowrank:4+q8+zstd", "q8/sr/clip3"} {
		s, err := Parse(in)
		fmt.Println(s, err)
	}
	_, err := Parse("topk:2")
	fmt.Println(err)
	// Output:
	// q4 <nil>
	// topk:0.01+q4 <nil>
	// lowrank:4+q8+zstd <nil>
	// q8/clip3/sr <nil>
	// compress: invalid setting: "topk:2": stage "topk:2": fraction "2" not a number in (0, 1]
}

func ExampleCodec_lowRank() {
	// A 64×32 weight matrix at offset 0 and a bias of 32 values after it.
	shape := Shape{{Offset: 0, Rows: 64, Cols: 32}}
	sender, _ := New(Config{Setting: MustParse("lowrank:4+q8"), Shape: shape, Seed: 1})
	receiver, _ := New(Config{Setting: MustParse("lowrank:4+q8"), Shape: shape})
	res, _ := sender.NewResidual(64*32 + 32)
	delta := make([]float32, 64*32+32)
	for i := range delta {
		delta[i] = float32(i%7) - 3
	}
	msg, _ := res.Encode(nil, delta)
	got, _ := receiver.Decode(nil, msg)
	fmt.Println(len(msg), "bytes for", len(got), "values")
	// Output:
	// 482 bytes for 2080 values
}
