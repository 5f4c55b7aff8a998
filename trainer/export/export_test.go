package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/safetensors"
)

func seq(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i) + 0.5
	}
	return v
}

func prov(spec string) Provenance {
	return Provenance{Spec: spec, Cohort: 7, Round: 42, ModelHash: bytes.Repeat([]byte{0xab}, 32)}
}

func TestMLPLayoutMatchesTheModel(t *testing.T) {
	m, err := nn.NewMLP(nn.MLPConfig{Sizes: []int{5, 4, 3}, Batch: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	l, err := LayoutFor(m.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(l, m.Layout()) {
		t.Fatalf("LayoutFor(%s) = %v, the model's is %v", m.Name(), l, m.Layout())
	}
}

// TestMLPToTorch checks the nn.Sequential names and the transposition by hand.
func TestMLPToTorch(t *testing.T) {
	l, _ := LayoutFor("mlp:3-2-2")
	theta := seq(l.Size()) // fc0.w [3,2] = 0.5..5.5, fc0.b [2], fc1.w [2,2], fc1.b [2]
	ts, err := ToTorch("mlp:3-2-2", l, theta)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range ts {
		names = append(names, fmt.Sprint(x.Name, x.Shape))
	}
	if want := []string{"0.weight[2 3]", "0.bias[2]", "2.weight[2 2]", "2.bias[2]"}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	// fc0.w rows (in) [0.5 1.5] [2.5 3.5] [4.5 5.5] → 0.weight rows (out) [0.5 2.5 4.5] [1.5 3.5 5.5].
	if want := []float32{0.5, 2.5, 4.5, 1.5, 3.5, 5.5}; !slices.Equal(ts[0].Data, want) {
		t.Errorf("0.weight %v, want %v", ts[0].Data, want)
	}
	if want := []float32{6.5, 7.5}; !slices.Equal(ts[1].Data, want) {
		t.Errorf("0.bias %v, want %v", ts[1].Data, want)
	}
}

// gptLayout is the agreed GPT layout written out by hand for L = 2.
func gptLayout(D, T int) nn.Layout {
	var b builder
	b.add("transformer.wte.weight", 256, D)
	b.add("transformer.wpe.weight", T, D)
	for _, i := range []string{"0", "1"} {
		h := "transformer.h." + i
		b.add(h+".ln_1.weight", D)
		b.add(h+".ln_1.bias", D)
		b.add(h+".attn.c_attn.weight", D, 3*D)
		b.add(h+".attn.c_attn.bias", 3*D)
		b.add(h+".attn.c_proj.weight", D, D)
		b.add(h+".attn.c_proj.bias", D)
		b.add(h+".ln_2.weight", D)
		b.add(h+".ln_2.bias", D)
		b.add(h+".mlp.c_fc.weight", D, 4*D)
		b.add(h+".mlp.c_fc.bias", 4*D)
		b.add(h+".mlp.c_proj.weight", 4*D, D)
		b.add(h+".mlp.c_proj.bias", D)
	}
	b.add("transformer.ln_f.weight", D)
	b.add("transformer.ln_f.bias", D)
	return b.l
}

func TestGPTLayoutMatchesTheModel(t *testing.T) {
	for _, spec := range []string{"gpt:2-8-2-4", "gpt:1-4-1-3-v17"} {
		m, err := nn.NewFromName(spec, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		l, err := LayoutFor(m.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(l, m.Layout()) {
			t.Fatalf("LayoutFor(%s) differs from the model's layout", spec)
		}
	}
}

func TestGPTToTorch(t *testing.T) {
	const spec = "gpt:2-8-2-4"
	l := gptLayout(8, 4)
	if got, _ := LayoutFor(spec); !reflect.DeepEqual(got, l) {
		t.Fatalf("LayoutFor(%s) differs from the agreed layout", spec)
	}
	if KindOf(l) != KindGPT {
		t.Fatalf("KindOf = %v", KindOf(l))
	}
	theta := seq(l.Size())
	ts, err := ToTorch(spec, l, theta)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != len(l)+1 || ts[len(ts)-1].Name != "lm_head.weight" {
		t.Fatalf("%d tensors, last %q", len(ts), ts[len(ts)-1].Name)
	}
	if !slices.Equal(ts[len(ts)-1].Data, ts[0].Data) || !slices.Equal(ts[len(ts)-1].Shape, []int{256, 8}) {
		t.Error("lm_head.weight is not a copy of wte")
	}
	byName := map[string]safetensors.Tensor{}
	for _, x := range ts {
		byName[x.Name] = x
	}
	for _, lt := range l {
		x := byName[lt.Name]
		src := theta[lt.Offset : lt.Offset+lt.Size()]
		linear := strings.Contains(lt.Name, ".c_") && strings.HasSuffix(lt.Name, ".weight")
		if !linear {
			if !slices.Equal(x.Shape, lt.Shape) || !slices.Equal(x.Data, src) {
				t.Errorf("%s changed: %v", lt.Name, x.Shape)
			}
			continue
		}
		in, out := lt.Shape[0], lt.Shape[1]
		if !slices.Equal(x.Shape, []int{out, in}) {
			t.Errorf("%s shape %v, want [%d %d]", lt.Name, x.Shape, out, in)
		}
		for i := range in {
			for o := range out {
				if x.Data[o*in+i] != src[i*out+o] {
					t.Fatalf("%s[%d,%d] not transposed", lt.Name, o, i)
				}
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, spec := range []string{"mlp:3-2", "mlp:5-4-3-2", "gpt:2-8-2-4", "gpt:1-4-4-3", "gpt:1-4-2-3-v5"} {
		t.Run(spec, func(t *testing.T) {
			l, err := LayoutFor(spec)
			if err != nil {
				t.Fatal(err)
			}
			theta := seq(l.Size())
			b, err := Export(prov(spec), l, theta)
			if err != nil {
				t.Fatal(err)
			}
			p, l2, theta2, err := Import(b, safetensors.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, prov(spec)) || !reflect.DeepEqual(l2, l) || !slices.Equal(theta2, theta) {
				t.Fatalf("Import = %+v", p)
			}
			again, err := Export(p, l2, theta2)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-export differs (%v)", err)
			}
		})
	}
}

func TestProvenanceJSON(t *testing.T) {
	p := prov("mlp:3-2")
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"spec":"mlp:3-2","cohort":7,"round":42,"model_hash":"` + strings.Repeat("ab", 32) + `"}`
	if string(b) != want {
		t.Fatalf("%s\nwant %s", b, want)
	}
	var q Provenance
	if err := json.Unmarshal(b, &q); err != nil || !reflect.DeepEqual(q, p) {
		t.Fatalf("%+v, %v", q, err)
	}
}

func TestLayoutRefused(t *testing.T) {
	l, _ := LayoutFor("mlp:3-2")
	for _, c := range []struct {
		name  string
		spec  string
		l     nn.Layout
		theta []float32
		want  error
	}{
		{"charlm", "charlm:v96-t64-d64-h128", l, seq(8), ErrSpec},
		{"other mlp", "mlp:3-3", l, seq(8), ErrLayout},
		{"short theta", "mlp:3-2", l, seq(7), ErrLayout},
		{"bad gpt", "gpt:2-7-2-4", l, seq(8), ErrSpec},
		{"gpt fields", "gpt:2-8-2", l, seq(8), ErrSpec},
	} {
		if _, err := ToTorch(c.spec, c.l, c.theta); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestImportIsStrict(t *testing.T) {
	const spec = "gpt:1-4-2-3"
	l, _ := LayoutFor(spec)
	good, err := ToTorch(spec, l, seq(l.Size()))
	if err != nil {
		t.Fatal(err)
	}
	clone := func() []safetensors.Tensor {
		out := make([]safetensors.Tensor, len(good))
		for i, x := range good {
			out[i] = safetensors.Tensor{Name: x.Name, DType: x.DType, Shape: slices.Clone(x.Shape), Data: slices.Clone(x.Data)}
		}
		return out
	}
	for _, c := range []struct {
		name string
		edit func([]safetensors.Tensor) []safetensors.Tensor
		msg  string
	}{
		{"missing", func(ts []safetensors.Tensor) []safetensors.Tensor { return ts[1:] }, "tensors"},
		{"extra", func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.Tensor{Name: "x", DType: "F32", Shape: []int{1}, Data: []float32{1}})
		}, "tensors"},
		{"renamed", func(ts []safetensors.Tensor) []safetensors.Tensor { ts[1].Name = "transformer.wpe.weightx"; return ts }, "missing"},
		{"untransposed", func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts[4].Shape = []int{ts[4].Shape[1], ts[4].Shape[0]}
			return ts
		}, "shape"},
		{"untied head", func(ts []safetensors.Tensor) []safetensors.Tensor { ts[len(ts)-1].Data[3] = 9; return ts }, "tied"},
		{"nan", func(ts []safetensors.Tensor) []safetensors.Tensor { ts[2].Data[0] = float32(math.NaN()); return ts }, "NaN"},
		{"duplicate", func(ts []safetensors.Tensor) []safetensors.Tensor { ts[1].Name = ts[0].Name; return ts }, "duplicate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := FromTorch(spec, c.edit(clone()))
			if !errors.Is(err, ErrStateDict) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want ErrStateDict mentioning %q", err, c.msg)
			}
		})
	}
	// A hostile spec in a tiny file does not allocate its model.
	for _, spec := range []string{"gpt:1048576-1048576-1-1048576", "gpt:64-4096-64-4096-v65536", "mlp:9223372036854775807-9223372036854775807"} {
		if _, _, err := FromTorch(spec, good); err == nil {
			t.Errorf("%s: accepted", spec)
		}
	}
}

func TestImportNeedsProvenance(t *testing.T) {
	l, _ := LayoutFor("mlp:3-2")
	ts, _ := ToTorch("mlp:3-2", l, seq(l.Size()))
	md := prov("mlp:3-2").Metadata()
	for _, k := range []string{KeySpec, KeyCohort, KeyRound, KeyModelHash} {
		m := maps(md)
		delete(m, k)
		b, _ := safetensors.Encode(ts, m)
		if _, _, _, err := Import(b, safetensors.Limits{}); !errors.Is(err, ErrProvenance) {
			t.Errorf("without %s: err = %v", k, err)
		}
	}
	m := maps(md)
	m[KeyModelHash] = "zz"
	b, _ := safetensors.Encode(ts, m)
	if _, _, _, err := Import(b, safetensors.Limits{}); !errors.Is(err, ErrProvenance) {
		t.Errorf("bad hash: err = %v", err)
	}
}

func maps(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// FuzzImport: Import never panics, and whatever it accepts re-exports to the same bytes' content.
func FuzzImport(f *testing.F) {
	for _, spec := range []string{"mlp:3-2", "gpt:1-4-2-3"} {
		l, _ := LayoutFor(spec)
		b, _ := Export(prov(spec), l, seq(l.Size()))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, l, theta, err := Import(b, safetensors.Limits{MaxHeader: 1 << 16})
		if err != nil {
			return
		}
		out, err := Export(p, l, theta)
		if err != nil {
			t.Fatalf("re-export: %v", err)
		}
		_, l2, theta2, err := Import(out, safetensors.Limits{})
		if err != nil || !reflect.DeepEqual(l2, l) || !slices.Equal(theta2, theta) {
			t.Fatalf("re-import: %v", err)
		}
	})
}
