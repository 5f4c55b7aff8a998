package protocol

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestSlicesCoverOnChunkBoundaries(t *testing.T) {
	for _, n := range []int{1, ChunkLen - 1, ChunkLen, 3*ChunkLen + 5, 203530} {
		for _, k := range []int{1, 2, 3, 5} {
			aggs := []string{"a", "b", "c", "d", "e"}[:k]
			s := Slices(n, aggs)
			if len(s) == 0 || s[0].Start != 0 || s[len(s)-1].End != n {
				t.Fatalf("n=%d k=%d: %+v does not cover", n, k, s)
			}
			for i := range s {
				if s[i].End <= s[i].Start || (i > 0 && s[i].Start != s[i-1].End) || s[i].Start%ChunkLen != 0 {
					t.Fatalf("n=%d k=%d: bad slice %d %+v", n, k, i, s[i])
				}
			}
		}
	}
	if Slices(0, []string{"a"}) != nil || Slices(5, nil) != nil {
		t.Fatal("degenerate inputs should give no slices")
	}
}

func TestModelHashIndependentOfSlicing(t *testing.T) {
	theta := make([]float32, 3*ChunkLen+77)
	for i := range theta {
		theta[i] = float32(math.Sin(float64(i)))
	}
	whole := HashParams(theta)
	var chunks [][32]byte
	for _, s := range Slices(len(theta), []string{"a", "b"}) {
		chunks = ChunkHashes(chunks, theta[s.Start:s.End])
	}
	if ModelHash(chunks) != whole {
		t.Fatal("hash from slices differs from hash of the whole vector")
	}
	theta[len(theta)-1] += 1e-7
	if HashParams(theta) == whole {
		t.Fatal("hash ignores a change in the last value")
	}
}

func TestFloatsRoundTripAndRejectBadInput(t *testing.T) {
	x := []float32{0, -1.5, 3e-38, 1e30}
	got, err := DecodeFloats(nil, AppendFloats(nil, x), len(x))
	if err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if got[i] != x[i] {
			t.Fatalf("[%d] %v != %v", i, got[i], x[i])
		}
	}
	if _, err := DecodeFloats(nil, AppendFloats(nil, x)[:15], 4); err == nil {
		t.Fatal("truncated floats accepted")
	}
	if _, err := DecodeFloats(nil, AppendFloats(nil, []float32{float32(math.NaN())}), 1); err == nil {
		t.Fatal("NaN accepted")
	}
}

func FuzzDecodeFloats(f *testing.F) {
	f.Add(AppendFloats(nil, []float32{1, 2, 3}), 3)
	f.Add([]byte{0, 0, 0xc0, 0x7f}, 1)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n > 1<<20 {
			return
		}
		x, err := DecodeFloats(nil, b, n)
		if err != nil {
			return
		}
		if string(AppendFloats(nil, x)) != string(b) {
			t.Fatal("re-encoding differs")
		}
	})
}

func TestDownCodec(t *testing.T) {
	for up, want := range map[string]string{
		"": "fp32", "fp32": "fp32", "q8": "q8", "q4": "q8", "lowrank:4+q8": "q8",
		"topk:0.01+q4": "q8+zstd", "topk:0.05+q2": "q8+zstd",
	} {
		if got := DownCodec(up); got != want {
			t.Errorf("DownCodec(%q) = %q, want %q", up, got, want)
		}
	}
}

func TestStatusKeyAddrs(t *testing.T) {
	st := &Status{
		Servers:      []ServerInfo{{ID: "c1", Addr: "10.0.0.1:7001"}, {ID: "c2", Addr: "10.0.0.2:7001"}},
		Coordinators: []string{"c1=aaaa", "c2=bbbb", "c3=cccc", "garbage"},
	}
	got := st.KeyAddrs()
	want := map[string]string{"aaaa": "10.0.0.1:7001", "bbbb": "10.0.0.2:7001"}
	if len(got) != len(want) || got["aaaa"] != want["aaaa"] || got["bbbb"] != want["bbbb"] {
		t.Fatalf("KeyAddrs = %v, want %v (a coordinator that is no voter, or a malformed entry, has no address)", got, want)
	}
}

func TestModelBlob(t *testing.T) {
	theta, mom := []float32{1, 2, 3}, []float32{0.1, 0.2, 0.3}
	h := HashParams(theta)
	blob := AppendModel(nil, theta, mom)
	gotT, gotM, err := DecodeModel(blob, 3, h[:])
	if err != nil || !slices.Equal(gotT, theta) || !slices.Equal(gotM, mom) {
		t.Fatalf("DecodeModel = %v %v %v", gotT, gotM, err)
	}
	other := HashParams([]float32{1, 2, 4})
	if _, _, err := DecodeModel(blob, 3, other[:]); !errors.Is(err, ErrWrongModel) {
		t.Errorf("a blob of another model: %v, want ErrWrongModel", err)
	}
	if _, _, err := DecodeModel(blob[:len(blob)-1], 3, h[:]); !errors.Is(err, ErrMalformed) {
		t.Errorf("a truncated blob: %v, want ErrMalformed", err)
	}
	r := ModelReply{Round: 4, Params: 3, Hash: h[:], Root: make([]byte, 32)}
	if err := r.Want(3, h[:]); err != nil {
		t.Errorf("the wanted reply: %v", err)
	}
	for _, bad := range []ModelReply{{Params: 4, Hash: h[:], Root: r.Root}, {Params: 3, Hash: other[:], Root: r.Root}, {Params: 3, Hash: h[:], Root: r.Root[:5]}} {
		if err := bad.Want(3, h[:]); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
