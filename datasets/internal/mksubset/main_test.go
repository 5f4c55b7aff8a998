package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := writeGzip(path, b[:len(b)-int(lenData(b))], b[len(b)-int(lenData(b)):]); err != nil {
		t.Fatal(err)
	}
}

// lenData is the data size of an IDX byte slice with one or three dims.
func lenData(b []byte) int64 {
	n := int64(1)
	for i := 0; i < int(b[3]); i++ {
		n *= int64(b[4+4*i])<<24 | int64(b[5+4*i])<<16 | int64(b[6+4*i])<<8 | int64(b[7+4*i])
	}
	return n
}

func gunzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The generator keeps the first n samples unchanged, fixes the count in the
// header, and writes the same bytes every time.
func TestRunKeepsFirstSamples(t *testing.T) {
	src, out := t.TempDir(), t.TempDir()
	for _, split := range []string{"train", "t10k"} {
		// 4 images of 1x2 pixels, 4 labels.
		writeFile(t, filepath.Join(src, split+"-images-idx3-ubyte.gz"),
			[]byte{0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 10, 11, 20, 21, 30, 31, 40, 41})
		writeFile(t, filepath.Join(src, split+"-labels-idx1-ubyte.gz"),
			[]byte{0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3, 4})
	}
	if err := run(src, out, 3, 1); err != nil {
		t.Fatal(err)
	}
	if got, want := gunzip(t, filepath.Join(out, "train-images-idx3-ubyte.gz")),
		[]byte{0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 10, 11, 20, 21, 30, 31}; !bytes.Equal(got, want) {
		t.Errorf("train images %v, want %v", got, want)
	}
	if got, want := gunzip(t, filepath.Join(out, "t10k-labels-idx1-ubyte.gz")), []byte{0, 0, 8, 1, 0, 0, 0, 1, 1}; !bytes.Equal(got, want) {
		t.Errorf("test labels %v, want %v", got, want)
	}
	first, _ := os.ReadFile(filepath.Join(out, "train-images-idx3-ubyte.gz"))
	out2 := t.TempDir()
	if err := run(src, out2, 3, 1); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(out2, "train-images-idx3-ubyte.gz")); !bytes.Equal(first, again) {
		t.Error("two runs wrote different bytes")
	}
	if err := run(src, t.TempDir(), 5, 1); err == nil {
		t.Error("asking for more samples than exist succeeded")
	}
}
