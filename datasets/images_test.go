package datasets

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// tinySet is a 3-image 2x2 data set as a MapFS; gz selects .gz names.
func tinySet(t *testing.T, gz bool) fstest.MapFS {
	t.Helper()
	pix := []byte{0, 255, 51, 102, 1, 2, 3, 4, 9, 9, 9, 9}
	lbl := []byte{9, 0, 3}
	if gz {
		return fstest.MapFS{
			"train-images-idx3-ubyte.gz": {Data: gzIDX(t, []int{3, 2, 2}, pix)},
			"train-labels-idx1-ubyte.gz": {Data: gzIDX(t, []int{3}, lbl)},
		}
	}
	return fstest.MapFS{
		"train-images-idx3-ubyte": {Data: rawIDX(t, []int{3, 2, 2}, pix)},
		"train-labels-idx1-ubyte": {Data: rawIDX(t, []int{3}, lbl)},
	}
}

func TestLoadImages(t *testing.T) {
	for _, gz := range []bool{false, true} {
		m, err := LoadImages(tinySet(t, gz), "train")
		if err != nil {
			t.Fatalf("gz=%v: %v", gz, err)
		}
		if m.Len() != 3 || m.Rows != 2 || m.Cols != 2 || m.Features() != 4 || m.Classes != 10 {
			t.Fatalf("gz=%v: got %d images %dx%d, %d classes", gz, m.Len(), m.Rows, m.Cols, m.Classes)
		}
		got := m.AppendFeatures(nil, []int{0, 2})
		want := []float32{0, 1, 0.2, 0.4, 9.0 / 255, 9.0 / 255, 9.0 / 255, 9.0 / 255}
		if len(got) != len(want) {
			t.Fatalf("features: %v", got)
		}
		for i := range want {
			if d := got[i] - want[i]; d > 1e-7 || d < -1e-7 {
				t.Errorf("feature %d = %v, want %v", i, got[i], want[i])
			}
		}
		if l := m.AppendLabels(nil, []int{2, 0, 1}); !equalInts(l, []int{3, 9, 0}) {
			t.Errorf("labels %v", l)
		}
		if !bytes.Equal(m.Image(1), []byte{1, 2, 3, 4}) {
			t.Errorf("image 1 = %v", m.Image(1))
		}
		s := m.Subset("s", []int{2, 1})
		if s.Len() != 2 || !bytes.Equal(s.Image(0), m.Image(2)) || s.Labels[1] != 0 {
			t.Errorf("subset %+v", s)
		}
	}
}

// Gzip is detected from the content, so a compressed file under the raw name
// loads too.
func TestLoadImagesGzipUnderRawName(t *testing.T) {
	fsys := fstest.MapFS{
		"t10k-images-idx3-ubyte": {Data: gzIDX(t, []int{1, 1, 1}, []byte{7})},
		"t10k-labels-idx1-ubyte": {Data: rawIDX(t, []int{1}, []byte{4})},
	}
	m, err := LoadImages(fsys, "t10k")
	if err != nil || m.Len() != 1 || m.Labels[0] != 4 || m.Pixels[0] != 7 {
		t.Fatalf("got %+v, %v", m, err)
	}
}

func TestAppendFeaturesReusesBuffer(t *testing.T) {
	m, err := LoadImages(tinySet(t, false), "train")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]float32, 0, 8)
	out := m.AppendFeatures(buf, []int{1, 1})
	if &out[0] != &buf[:1][0] {
		t.Error("AppendFeatures reallocated although the buffer had room")
	}
	if allocs := testing.AllocsPerRun(10, func() { m.AppendFeatures(buf[:0], []int{0, 1}) }); allocs != 0 {
		t.Errorf("AppendFeatures into a big enough buffer: %v allocs", allocs)
	}
}

func TestLoadImagesErrors(t *testing.T) {
	pix := seq(8)
	for _, tc := range []struct {
		name        string
		imgs, lbls  []byte
		want        error
		file, words string
	}{
		{"count mismatch", rawIDX(t, []int{2, 2, 2}, pix), rawIDX(t, []int{3}, []byte{1, 2, 3}), ErrMalformed, "train-labels-idx1-ubyte", "2 images but 3 labels"},
		{"label too big", rawIDX(t, []int{2, 2, 2}, pix), rawIDX(t, []int{2}, []byte{1, 10}), ErrMalformed, "train-labels-idx1-ubyte", "label 10 of sample 1"},
		{"images 2-D", rawIDX(t, []int{2, 4}, pix), rawIDX(t, []int{2}, []byte{1, 2}), ErrMalformed, "train-images-idx3-ubyte", "want 3"},
		{"labels 2-D", rawIDX(t, []int{2, 2, 2}, pix), rawIDX(t, []int{2, 1}, []byte{1, 2}), ErrMalformed, "train-labels-idx1-ubyte", "want 1"},
		{"zero cols", rawIDX(t, []int{2, 2, 0}, nil), rawIDX(t, []int{2}, []byte{1, 2}), ErrMalformed, "train-images-idx3-ubyte", "empty image size"},
		{"short images", rawIDX(t, []int{2, 2, 2}, pix)[:20], rawIDX(t, []int{2}, []byte{1, 2}), ErrTruncated, "train-images-idx3-ubyte", "got 4 of 8"},
		{"bad magic", []byte("P5\n2 2\n255\n"), rawIDX(t, []int{2}, []byte{1, 2}), ErrMalformed, "train-images-idx3-ubyte", "bad magic"},
	} {
		fsys := fstest.MapFS{
			"train-images-idx3-ubyte": {Data: tc.imgs},
			"train-labels-idx1-ubyte": {Data: tc.lbls},
		}
		_, err := LoadImages(fsys, "train")
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			continue
		}
		for _, w := range []string{tc.file, tc.words} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, w)
			}
		}
	}
	_, err := LoadImages(fstest.MapFS{}, "train")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "train-images-idx3-ubyte.gz") {
		t.Errorf("missing files: %v", err)
	}
}

func TestEmbeddedFashionMNIST(t *testing.T) {
	train, test, err := EmbeddedFashionMNIST()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m    *Images
		n    int
		name string
	}{{train, 6000, "fashion-mnist/train"}, {test, 1000, "fashion-mnist/t10k"}} {
		if tc.m.Len() != tc.n || tc.m.Rows != 28 || tc.m.Cols != 28 || tc.m.Name != tc.name {
			t.Errorf("%s: %d images %dx%d named %q", tc.name, tc.m.Len(), tc.m.Rows, tc.m.Cols, tc.m.Name)
		}
		var counts [MNISTClasses]int
		for _, l := range tc.m.Labels {
			counts[l]++
		}
		for c, k := range counts {
			if k < tc.n/10*85/100 || k > tc.n/10*115/100 {
				t.Errorf("%s: class %d has %d samples, not within 15%% of %d", tc.name, c, k, tc.n/10)
			}
		}
	}
	// The original files start with an ankle boot in both splits.
	if train.Labels[0] != 9 || test.Labels[0] != 9 {
		t.Errorf("first labels %d, %d; want 9 (Ankle boot)", train.Labels[0], test.Labels[0])
	}
}

func TestFashionMNISTFromDir(t *testing.T) {
	dir := t.TempDir()
	sub := EmbeddedFS()
	for _, name := range []string{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} {
		b, err := fs.ReadFile(sub, "data/fashion-mnist/"+name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	train, test, src, err := FashionMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	if src != "dir:"+dir || train.Len() != 6000 || test.Len() != 1000 {
		t.Errorf("source %q, %d/%d samples", src, train.Len(), test.Len())
	}
	if err := os.Remove(filepath.Join(dir, "t10k-labels-idx1-ubyte.gz")); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := FashionMNIST(dir); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), dir) {
		t.Errorf("missing test labels: %v", err)
	}
}

func TestFashionMNISTDefault(t *testing.T) {
	train, _, src, err := FashionMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat(filepath.Join(SystemFashionMNISTDir, "train-images-idx3-ubyte.gz"))
	switch {
	case statErr == nil && (src != "system:"+SystemFashionMNISTDir || train.Len() != 60000):
		t.Errorf("system copy present but source %q with %d samples", src, train.Len())
	case statErr != nil && (src != EmbeddedFashionMNISTSource || train.Len() != 6000):
		t.Errorf("no system copy but source %q with %d samples", src, train.Len())
	}
}

// The embedded subset is the first samples of the full data set, unchanged.
func TestEmbeddedMatchesSystem(t *testing.T) {
	if _, err := os.Stat(SystemFashionMNISTDir); err != nil {
		t.Skip("dataset-fashion-mnist not installed")
	}
	if testing.Short() {
		t.Skip("decodes the full 60,000-image data set")
	}
	full, fullTest, err := loadSplits(os.DirFS(SystemFashionMNISTDir))
	if err != nil {
		t.Fatal(err)
	}
	if full.Len() != 60000 || fullTest.Len() != 10000 {
		t.Fatalf("system copy has %d/%d samples", full.Len(), fullTest.Len())
	}
	sub, subTest, err := EmbeddedFashionMNIST()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]*Images{{full, sub}, {fullTest, subTest}} {
		n := p[1].Len()
		if !bytes.Equal(p[0].Labels[:n], p[1].Labels) || !bytes.Equal(p[0].Pixels[:n*784], p[1].Pixels) {
			t.Errorf("%s: embedded subset differs from the first %d system samples", p[1].Name, n)
		}
	}
}

func BenchmarkLoadEmbedded(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		train, _, err := EmbeddedFashionMNIST()
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(train.Pixels)))
	}
}

func BenchmarkAppendFeatures(b *testing.B) {
	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		b.Fatal(err)
	}
	idx := make([]int, 64)
	for i := range idx {
		idx[i] = i * 37
	}
	buf := make([]float32, 0, 64*784)
	b.SetBytes(64 * 784)
	b.ReportAllocs()
	for b.Loop() {
		buf = train.AppendFeatures(buf[:0], idx)
	}
}

func TestWriteImagesRoundTrip(t *testing.T) {
	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		t.Fatal(err)
	}
	shard := train.Subset("shard", IID(train.Len(), 8, 1)[3])
	dir := t.TempDir()
	if err := WriteImages(dir, "train", shard); err != nil {
		t.Fatal(err)
	}
	got, err := LoadImages(os.DirFS(dir), "train")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Pixels, shard.Pixels) || !bytes.Equal(got.Labels, shard.Labels) || got.Rows != 28 {
		t.Error("shard written and read back differs")
	}
	if NewFingerprint(got.SampleHashes(nil)) != NewFingerprint(shard.SampleHashes(nil)) {
		t.Error("fingerprint changed through disk")
	}
	bad := &Images{Rows: 2, Cols: 2, Pixels: []uint8{1, 2, 3}, Labels: []uint8{0}}
	if err := WriteImages(dir, "x", bad); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("inconsistent images: %v", err)
	}
}
