package datasets

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math"
	"slices"
	"testing"
)

func TestSampleHashCanonical(t *testing.T) {
	pix := []uint8{1, 2, 3, 4}
	want := sha256.Sum256([]byte{7, 1, 2, 3, 4})
	if HashImage(7, pix) != Hash(want) {
		t.Error("HashImage is not SHA-256(label || pixels)")
	}
	if HashImage(6, pix) == HashImage(7, pix) {
		t.Error("label does not enter the image hash")
	}
	if HashText("Ay.") != Hash(sha256.Sum256([]byte("Ay."))) {
		t.Error("HashText is not SHA-256(bytes)")
	}
	m := &Images{Rows: 2, Cols: 2, Classes: 10, Pixels: []uint8{1, 2, 3, 4, 5, 6, 7, 8}, Labels: []uint8{7, 1}}
	if hs := m.SampleHashes(nil); len(hs) != 2 || hs[0] != HashImage(7, pix) || !slices.Equal(m.SampleHashes([]int{1, 0}), []Hash{hs[1], hs[0]}) {
		t.Error("Images.SampleHashes disagrees with HashImage")
	}
}

// Same samples under another shard name and in another order: same
// fingerprint. One sample changed: another digest, near-1 overlap.
func TestFingerprintOrderAndNameIndependent(t *testing.T) {
	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		t.Fatal(err)
	}
	idx := IID(train.Len(), 6, 3)[0]
	rev := slices.Clone(idx)
	slices.Reverse(rev)
	a := train.Subset("alice", idx)
	b := train.Subset("bob/renamed", rev)
	fa, fb := NewFingerprint(a.SampleHashes(nil)), NewFingerprint(b.SampleHashes(nil))
	if fa != fb {
		t.Fatalf("same samples, different fingerprints: %v vs %v", fa, fb)
	}
	if fa.N != len(idx) || fa.Overlap(fb) != 1 {
		t.Errorf("N=%d overlap %v", fa.N, fa.Overlap(fb))
	}
	b.Pixels[100]++ // one pixel of one image
	fc := NewFingerprint(b.SampleHashes(nil))
	if fc.Digest == fa.Digest {
		t.Error("changed sample, same digest")
	}
	if o := fa.Overlap(fc); o < 0.95 {
		t.Errorf("one changed sample of %d: overlap %v", len(idx), o)
	}
	// Repeats count in the digest and N but not in the sketch.
	hs := a.SampleHashes(nil)
	fd := NewFingerprint(append(hs, hs[0]))
	if fd.Digest == fa.Digest || fd.N != fa.N+1 || fd.Sketch != fa.Sketch {
		t.Error("a repeated sample should change digest and N but not the sketch")
	}
}

func TestOverlapEstimate(t *testing.T) {
	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		t.Fatal(err)
	}
	hs := train.SampleHashes(nil)
	var sum float64
	const pairs = 10
	for p := range pairs {
		off := p * 500
		a := NewFingerprint(hs[off : off+1000])
		b := NewFingerprint(hs[off+500 : off+1500]) // half of each shared: J = 500/1500
		o := a.Overlap(b)
		sum += o
		if math.Abs(o-1.0/3) > 4*math.Sqrt((1.0/3)*(2.0/3)/SketchSize) {
			t.Errorf("pair %d: overlap %.3f, want 1/3 ± 4 standard errors", p, o)
		}
		if s := EstimateShared(a, b); math.Abs(s-500) > 200 {
			t.Errorf("pair %d: estimated %v shared samples, want ~500", p, s)
		}
	}
	mean := sum / pairs
	t.Logf("mean overlap over %d half-shared pairs: %.4f (want 0.3333)", pairs, mean)
	if math.Abs(mean-1.0/3) > 0.04 {
		t.Errorf("mean overlap %.4f, want 1/3", mean)
	}
	disjoint := Overlap(NewSketch(hs[:1000]), NewSketch(hs[1000:2000]))
	if disjoint > 0.03 {
		t.Errorf("disjoint shards: overlap %v", disjoint)
	}
	if Overlap(NewSketch(nil), NewSketch(nil)) != 0 || Overlap(NewSketch(nil), NewSketch(hs[:5])) != 0 {
		t.Error("overlap with an empty set should be 0")
	}
}

// Text samples: speeches split naturally by speaker share nothing.
func TestFingerprintPlayShards(t *testing.T) {
	p, err := EmbeddedPlay()
	if err != nil {
		t.Fatal(err)
	}
	parts := Natural(p.Groups(), 2)
	f0, f1 := NewFingerprint(p.SampleHashes(parts[0])), NewFingerprint(p.SampleHashes(parts[1]))
	if o := f0.Overlap(f1); o > 0.05 {
		t.Errorf("speaker shards overlap %v", o)
	}
	all := NewFingerprint(p.SampleHashes(nil))
	both := NewFingerprint(append(p.SampleHashes(parts[1]), p.SampleHashes(parts[0])...))
	if all != both {
		t.Error("union of shards differs from the whole play")
	}
}

func TestFingerprintBinary(t *testing.T) {
	hs := []Hash{HashText("a"), HashText("b"), HashText("c")}
	for _, f := range []Fingerprint{NewFingerprint(hs), NewFingerprint(nil)} {
		b, err := f.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var g Fingerprint
		if err := g.UnmarshalBinary(b); err != nil || g != f {
			t.Fatalf("round trip: %v", err)
		}
	}
	good, _ := NewFingerprint(hs).MarshalBinary()
	emptyN1, _ := NewFingerprint(nil).MarshalBinary()
	emptyN1[4] = 1
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, ErrTruncated},
		{"bad magic", append([]byte("XFP1"), good[4:]...), ErrMalformed},
		{"short", good[:len(good)-1], ErrTruncated},
		{"no count", good[:4], ErrTruncated},
		{"trailing", append(bytes.Clone(good), 0), ErrMalformed},
		{"N=1 empty sketch", emptyN1, ErrMalformed},
		{"varint overflow", append([]byte("CFP1"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrMalformed},
	} {
		var g Fingerprint
		if err := g.UnmarshalBinary(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := (Fingerprint{N: -1}).MarshalBinary(); err == nil {
		t.Error("negative N marshalled")
	}
}

func FuzzFingerprintUnmarshal(f *testing.F) {
	good, _ := NewFingerprint([]Hash{HashText("x")}).MarshalBinary()
	empty, _ := NewFingerprint(nil).MarshalBinary()
	f.Add(good)
	f.Add(empty)
	f.Add([]byte("CFP1\xff"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var g Fingerprint
		if err := g.UnmarshalBinary(in); err != nil {
			return
		}
		out, err := g.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var h Fingerprint
		if err := h.UnmarshalBinary(out); err != nil || h != g {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func BenchmarkFingerprint(b *testing.B) {
	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		b.Fatal(err)
	}
	hs := train.SampleHashes(nil)
	b.ReportAllocs()
	for b.Loop() {
		NewFingerprint(hs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(hs)), "ns/sample")
}

func BenchmarkSampleHashes(b *testing.B) {
	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(train.Pixels) + train.Len()))
	b.ReportAllocs()
	for b.Loop() {
		train.SampleHashes(nil)
	}
}
