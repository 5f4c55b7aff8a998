package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/tiny.safetensors")

func tiny() ([]Tensor, map[string]string) {
	return []Tensor{
		{Name: "0.weight", DType: F32, Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "0.bias", DType: F32, Shape: []int{2}, Data: []float32{-1, 0.5}},
	}, map[string]string{"cohort.spec": "mlp:3-2", "format": "pt"}
}

// TestGolden pins the encoding of a tiny model, checked against the format by hand: the header
// below is the JSON object the format describes, padded with spaces to 8-byte alignment.
func TestGolden(t *testing.T) {
	ts, md := tiny()
	got, err := Encode(ts, md)
	if err != nil {
		t.Fatal(err)
	}
	header := `{"__metadata__":{"cohort.spec":"mlp:3-2","format":"pt"},` +
		`"0.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},` +
		`"0.bias":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}`
	for len(header)%8 != 0 {
		header += " "
	}
	want := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	want = append(want, header...)
	for _, x := range []uint32{0x3f800000, 0x40000000, 0x40400000, 0x40800000, 0x40a00000, 0x40c00000, 0xbf800000, 0x3f000000} {
		want = binary.LittleEndian.AppendUint32(want, x)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode:\n%q\nwant\n%q", got, want)
	}
	if *update {
		if err := os.WriteFile("testdata/tiny.safetensors", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file, err := os.ReadFile("testdata/tiny.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, got) {
		t.Fatal("testdata/tiny.safetensors differs from Encode's output (go test -run TestGolden -update)")
	}
	f, err := Decode(file, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.Tensors, ts) || !reflect.DeepEqual(f.Metadata, md) {
		t.Fatalf("Decode = %+v", f)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name string
		ts   []Tensor
		md   map[string]string
	}{
		{"empty", nil, nil},
		{"scalar", []Tensor{{Name: "s", DType: F32, Shape: []int{}, Data: []float32{3}}}, nil},
		{"zero-size", []Tensor{{Name: "z", DType: F32, Shape: []int{0, 4}, Data: []float32{}}, {Name: "a", DType: F32, Shape: []int{1}, Data: []float32{7}}}, nil},
		{"odd names", []Tensor{{Name: "a\"<b>\\ü", DType: F32, Shape: []int{1, 1, 1}, Data: []float32{-0}}}, map[string]string{"k": "v\n<&>"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := Encode(c.ts, c.md)
			if err != nil {
				t.Fatal(err)
			}
			if (binary.LittleEndian.Uint64(b)+8)%8 != 0 {
				t.Error("data is not 8-byte aligned")
			}
			f, err := Decode(b, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Tensors) != len(c.ts) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(c.ts))
			}
			for i := range c.ts {
				if !reflect.DeepEqual(f.Tensors[i], c.ts[i]) {
					t.Errorf("tensor %d = %+v, want %+v", i, f.Tensors[i], c.ts[i])
				}
			}
			if len(c.md) > 0 && !reflect.DeepEqual(f.Metadata, c.md) {
				t.Errorf("metadata %v, want %v", f.Metadata, c.md)
			}
			again, err := Encode(f.Tensors, f.Metadata)
			if err != nil || !bytes.Equal(again, b) {
				t.Errorf("re-encoding differs (%v)", err)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		ts   []Tensor
	}{
		{"dtype", []Tensor{{Name: "a", DType: "F16", Shape: []int{1}, Data: []float32{1}}}},
		{"length", []Tensor{{Name: "a", DType: F32, Shape: []int{2}, Data: []float32{1}}}},
		{"negative", []Tensor{{Name: "a", DType: F32, Shape: []int{-1}, Data: nil}}},
		{"duplicate", []Tensor{{Name: "a", DType: F32, Shape: []int{1}, Data: []float32{1}}, {Name: "a", DType: F32, Shape: []int{1}, Data: []float32{1}}}},
		{"reserved", []Tensor{{Name: "__metadata__", DType: F32, Shape: []int{1}, Data: []float32{1}}}},
		{"empty name", []Tensor{{DType: F32, Shape: []int{1}, Data: []float32{1}}}},
	} {
		if _, err := Encode(c.ts, nil); !errors.Is(err, ErrTensor) {
			t.Errorf("%s: err = %v, want ErrTensor", c.name, err)
		}
	}
}

// file builds a file from a raw header (padded) and n data bytes.
func file(header string, n int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), make([]byte, n)...)
}

func TestDecodeRefuses(t *testing.T) {
	long := binary.LittleEndian.AppendUint64(nil, 1<<62)
	for _, c := range []struct {
		name string
		b    []byte
		want error
		msg  string
	}{
		{"short", []byte{1, 2, 3}, ErrFormat, "shorter"},
		{"header beyond file", append(long, '{', '}'), ErrFormat, "header of"},
		{"header limit", file(`{}`+strings.Repeat(" ", 2000), 0), ErrLimit, "limit"},
		{"not an object", file(`[1]`, 0), ErrFormat, "start with"},
		{"malformed", file(`{"a":{"dtype":"F32",`, 0), ErrFormat, "tensor"},
		{"empty name", file(`{"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, 0), ErrFormat, "empty"},
		{"trailing", file(`{} {}`, 0), ErrFormat, "after"},
		{"bad utf8", file("{\"\xff\":1}", 0), ErrFormat, "UTF-8"},
		{"unknown dtype", file(`{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}`, 4), ErrFormat, "unknown dtype"},
		{"unsupported dtype", file(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 4), ErrFormat, "not supported"},
		{"unknown field", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, 4), ErrFormat, "unknown field"},
		{"duplicate", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), ErrFormat, "duplicate"},
		{"duplicate metadata", file(`{"__metadata__":{},"__metadata__":{}}`, 0), ErrFormat, "duplicate"},
		{"metadata not strings", file(`{"__metadata__":{"a":1}}`, 0), ErrFormat, "__metadata__"},
		{"out of range", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), ErrFormat, "outside"},
		{"reversed", file(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, 4), ErrFormat, "outside"},
		{"size mismatch", file(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), ErrFormat, "bytes"},
		{"overflowing shape", file(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}`, 0), ErrFormat, "more than"},
		{"negative dim", file(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, 0), ErrFormat, "dimension"},
		{"no shape", file(`{"a":{"dtype":"F32","data_offsets":[0,0]}}`, 0), ErrFormat, "no shape"},
		{"three offsets", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 4), ErrFormat, "offsets"},
		{"negative offset", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, 4), ErrFormat, "tensor"},
		{"overlap", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), ErrFormat, "overlaps"},
		{"hole", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), ErrFormat, "hole"},
		{"uncovered tail", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8), ErrFormat, "cover"},
		{"null entry", file(`{"a":null}`, 0), ErrFormat, "null"},
		{"rank", file(`{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}`, 4), ErrLimit, "dimensions"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.b, Limits{MaxHeader: 1024})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, c.want, c.msg)
			}
		})
	}
	if _, err := Decode(file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), Limits{MaxTensors: 1}); !errors.Is(err, ErrLimit) {
		t.Errorf("MaxTensors: err = %v", err)
	}
}

// TestDecodeSortsByOffset: a header may list tensors in any order; Decode returns them in data order.
func TestDecodeSortsByOffset(t *testing.T) {
	f, err := Decode(file(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Tensors[0].Name != "a" || f.Tensors[1].Name != "b" {
		t.Fatalf("order %s, %s", f.Tensors[0].Name, f.Tensors[1].Name)
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to a file that decodes to
// the same tensors and metadata.
func FuzzDecode(f *testing.F) {
	ts, md := tiny()
	b, _ := Encode(ts, md)
	f.Add(b)
	b, _ = Encode(nil, nil)
	f.Add(b)
	b, _ = Encode([]Tensor{{Name: "s", DType: F32, Shape: []int{}, Data: []float32{1}}}, nil)
	f.Add(b)
	f.Add(file(`{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(b, Limits{MaxHeader: 1 << 16})
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrLimit) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		enc, err := Encode(got.Tensors, got.Metadata)
		if err != nil {
			// A name Encode refuses cannot have been accepted by Decode.
			t.Fatalf("Encode of a decoded file: %v", err)
		}
		again, err := Decode(enc, Limits{MaxHeader: 1 << 20})
		if err != nil {
			t.Fatalf("Decode of re-encoded file: %v", err)
		}
		if len(again.Tensors) != len(got.Tensors) {
			t.Fatalf("%d tensors, then %d", len(got.Tensors), len(again.Tensors))
		}
		for i := range got.Tensors {
			a, g := again.Tensors[i], got.Tensors[i]
			if a.Name != g.Name || !reflect.DeepEqual(a.Shape, g.Shape) || !bytes.Equal(f32bytes(a.Data), f32bytes(g.Data)) {
				t.Fatalf("tensor %d changed: %+v vs %+v", i, g, a)
			}
		}
		if len(got.Metadata)+len(again.Metadata) > 0 && !reflect.DeepEqual(got.Metadata, again.Metadata) {
			t.Fatalf("metadata %v, then %v", got.Metadata, again.Metadata)
		}
	})
}

func f32bytes(v []float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}
