// Command mksubset regenerates the embedded Fashion-MNIST subset in
// datasets/data/fashion-mnist from a full copy of the data set:
//
//	go run ./datasets/internal/mksubset \
//	    -src /usr/share/datasets/fashion-mnist -out datasets/data/fashion-mnist
//
// It keeps the first -train training and the first -test test samples, in
// file order (the first 6,000/1,000 are class-balanced to within ±8 % / ±15 %,
// so no stratified selection is needed), and writes them as IDX gzip files
// with a deterministic gzip header (no name, zero time, best compression).
// It prints the per-class counts.
//
// It uses only the standard library, so it runs even when the embedded files
// the datasets package needs to compile are missing.
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	src := flag.String("src", "/usr/share/datasets/fashion-mnist", "directory holding the full Fashion-MNIST IDX .gz files")
	out := flag.String("out", "datasets/data/fashion-mnist", "output directory")
	nTrain := flag.Int("train", 6000, "number of training samples to keep")
	nTest := flag.Int("test", 1000, "number of test samples to keep")
	flag.Parse()
	if err := run(*src, *out, *nTrain, *nTest); err != nil {
		fmt.Fprintln(os.Stderr, "mksubset:", err)
		os.Exit(1)
	}
}

func run(src, out string, nTrain, nTest int) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, s := range []struct {
		split string
		n     int
	}{{"train", nTrain}, {"t10k", nTest}} {
		var labels []byte
		for _, kind := range []string{"labels-idx1", "images-idx3"} {
			name := s.split + "-" + kind + "-ubyte.gz"
			hdr, data, err := readIDX(filepath.Join(src, name))
			if err != nil {
				return err
			}
			count := int(binary.BigEndian.Uint32(hdr[4:8]))
			if s.n <= 0 || s.n > count || len(data)%count != 0 {
				return fmt.Errorf("%s: want %d of %d samples (%d data bytes)", name, s.n, count, len(data))
			}
			per := len(data) / count
			binary.BigEndian.PutUint32(hdr[4:8], uint32(s.n))
			if err := writeGzip(filepath.Join(out, name), hdr, data[:s.n*per]); err != nil {
				return err
			}
			if kind == "labels-idx1" {
				labels = data[:s.n]
			}
		}
		var counts [10]int
		for _, l := range labels {
			if l < 10 {
				counts[l]++
			}
		}
		fmt.Printf("%s: %d samples, per class %v\n", s.split, s.n, counts)
	}
	return nil
}

// readIDX returns the header (magic + dims) and data of a gzip IDX file.
func readIDX(name string) (hdr, data []byte, err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) < 8 || b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] < 1 || len(b) < 4+4*int(b[3]) {
		return nil, nil, fmt.Errorf("%s: not an unsigned-byte IDX file", name)
	}
	n := 4 + 4*int(b[3])
	return append([]byte(nil), b[:n]...), b[n:], nil
}

func writeGzip(name string, hdr, data []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	zw.Write(hdr)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(name, buf.Bytes(), 0o644)
}
