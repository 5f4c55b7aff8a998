package datasets

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MNISTClasses is the number of classes in MNIST and Fashion-MNIST.
const MNISTClasses = 10

// FashionMNISTClasses names the ten Fashion-MNIST labels, by label value.
var FashionMNISTClasses = [MNISTClasses]string{
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}

// SystemFashionMNISTDir is where the Debian package dataset-fashion-mnist
// installs the full data set. FashionMNIST("") uses it when present.
const SystemFashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// Images is a labelled set of grey-scale images: image i has pixels
// Pixels[i*Rows*Cols : (i+1)*Rows*Cols] (row-major, 0 = background) and
// label Labels[i] < Classes.
type Images struct {
	Name       string
	Rows, Cols int
	Classes    int
	Pixels     []uint8 // Len()*Rows*Cols
	Labels     []uint8 // Len()
}

// Len returns the number of images.
func (m *Images) Len() int { return len(m.Labels) }

// Features returns the number of features per image, Rows*Cols.
func (m *Images) Features() int { return m.Rows * m.Cols }

// Image returns the pixels of image i (a sub-slice, not a copy).
func (m *Images) Image(i int) []uint8 {
	f := m.Features()
	return m.Pixels[i*f : (i+1)*f : (i+1)*f]
}

// AppendFeatures appends, for each index in idx, the image's pixels scaled to
// [0, 1] (pixel/255) to dst and returns the extended slice: len(idx)*Features()
// values. Pass dst[:0] to reuse a buffer. It panics if an index is out of
// range (a programmer error).
func (m *Images) AppendFeatures(dst []float32, idx []int) []float32 {
	f := m.Features()
	dst = growF32(dst, len(idx)*f)
	for _, i := range idx {
		if i < 0 || i >= m.Len() {
			panic(fmt.Sprintf("datasets: image index %d out of range [0,%d)", i, m.Len()))
		}
		for _, p := range m.Pixels[i*f : (i+1)*f] {
			dst = append(dst, float32(p)*(1.0/255))
		}
	}
	return dst
}

// AppendLabels appends the labels of the images in idx to dst as ints. It
// panics if an index is out of range (a programmer error).
func (m *Images) AppendLabels(dst []int, idx []int) []int {
	for _, i := range idx {
		if i < 0 || i >= m.Len() {
			panic(fmt.Sprintf("datasets: image index %d out of range [0,%d)", i, m.Len()))
		}
		dst = append(dst, int(m.Labels[i]))
	}
	return dst
}

// IntLabels returns all labels as ints (the input Dirichlet expects).
func (m *Images) IntLabels() []int {
	out := make([]int, m.Len())
	for i, l := range m.Labels {
		out[i] = int(l)
	}
	return out
}

// Subset returns a new Images holding copies of the images in idx, in that
// order. It panics if an index is out of range (a programmer error).
func (m *Images) Subset(name string, idx []int) *Images {
	f := m.Features()
	out := &Images{Name: name, Rows: m.Rows, Cols: m.Cols, Classes: m.Classes,
		Pixels: make([]uint8, 0, len(idx)*f), Labels: make([]uint8, 0, len(idx))}
	for _, i := range idx {
		if i < 0 || i >= m.Len() {
			panic(fmt.Sprintf("datasets: image index %d out of range [0,%d)", i, m.Len()))
		}
		out.Pixels = append(out.Pixels, m.Pixels[i*f:(i+1)*f]...)
		out.Labels = append(out.Labels, m.Labels[i])
	}
	return out
}

func growF32(s []float32, n int) []float32 {
	if cap(s)-len(s) >= n {
		return s
	}
	out := make([]float32, len(s), len(s)+n)
	copy(out, s)
	return out
}

// LoadImages loads split ("train" or "t10k", or any prefix using the
// MNIST/Fashion-MNIST naming) from fsys: images from
// SPLIT-images-idx3-ubyte.gz, else SPLIT-images-idx3-ubyte, and labels from
// SPLIT-labels-idx1-ubyte(.gz). Either file may be gzip-compressed or raw
// whatever its name. Images must be 3-D (n, rows, cols), labels 1-D (n) with
// the same n and every label < MNISTClasses. Errors name the file and wrap
// ErrNotFound, ErrMalformed, ErrTruncated or ErrTooLarge.
func LoadImages(fsys fs.FS, split string) (*Images, error) {
	imgName, img, err := readIDXFile(fsys, split+"-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	lblName, lbl, err := readIDXFile(fsys, split+"-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}
	if len(img.Dims) != 3 {
		return nil, fmt.Errorf("datasets: %s: %w: images have %d dimensions %v, want 3 (count, rows, cols)", imgName, ErrMalformed, len(img.Dims), img.Dims)
	}
	if img.Dims[1] == 0 || img.Dims[2] == 0 {
		return nil, fmt.Errorf("datasets: %s: %w: empty image size %dx%d", imgName, ErrMalformed, img.Dims[1], img.Dims[2])
	}
	if len(lbl.Dims) != 1 {
		return nil, fmt.Errorf("datasets: %s: %w: labels have %d dimensions %v, want 1 (count)", lblName, ErrMalformed, len(lbl.Dims), lbl.Dims)
	}
	if img.Dims[0] != lbl.Dims[0] {
		return nil, fmt.Errorf("datasets: %s, %s: %w: %d images but %d labels", imgName, lblName, ErrMalformed, img.Dims[0], lbl.Dims[0])
	}
	for i, l := range lbl.Data {
		if int(l) >= MNISTClasses {
			return nil, fmt.Errorf("datasets: %s: %w: label %d of sample %d is not below %d classes", lblName, ErrMalformed, l, i, MNISTClasses)
		}
	}
	return &Images{Name: split, Rows: img.Dims[1], Cols: img.Dims[2], Classes: MNISTClasses,
		Pixels: img.Data, Labels: lbl.Data}, nil
}

// readIDXFile opens base+".gz", else base, and decodes it.
func readIDXFile(fsys fs.FS, base string) (string, *IDX, error) {
	var tried []string
	for _, name := range []string{base + ".gz", base} {
		f, err := fsys.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, name)
			continue
		}
		if err != nil {
			return name, nil, fmt.Errorf("datasets: %s: %w", name, err)
		}
		x, err := ReadIDX(f)
		cerr := f.Close()
		if err != nil {
			return name, nil, fmt.Errorf("datasets: %s: %w", name, err)
		}
		if cerr != nil {
			return name, nil, fmt.Errorf("datasets: %s: %w", name, cerr)
		}
		return name, x, nil
	}
	return base, nil, fmt.Errorf("datasets: %w: none of %q", ErrNotFound, tried)
}

// FashionMNIST loads the Fashion-MNIST train and test ("t10k") splits.
//
//   - dir != "": from that directory (any error is returned, no fallback);
//   - dir == "": from SystemFashionMNISTDir if its files exist, else the
//     embedded subset (EmbeddedFashionMNIST). A system copy that exists but
//     fails to decode is an error, not a silent fallback.
//
// source describes what was loaded: "dir:<dir>", "system:<dir>" or
// "embedded:subset-6000/1000".
func FashionMNIST(dir string) (train, test *Images, source string, err error) {
	if dir != "" {
		train, test, err = loadSplits(os.DirFS(dir))
		if err != nil {
			return nil, nil, "", fmt.Errorf("datasets: fashion-mnist in %s: %w", dir, err)
		}
		return train, test, "dir:" + dir, nil
	}
	if _, statErr := os.Stat(SystemFashionMNISTDir); statErr == nil {
		train, test, err = loadSplits(os.DirFS(SystemFashionMNISTDir))
		if err == nil {
			return train, test, "system:" + SystemFashionMNISTDir, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, nil, "", fmt.Errorf("datasets: fashion-mnist in %s: %w", SystemFashionMNISTDir, err)
		}
	}
	train, test, err = EmbeddedFashionMNIST()
	if err != nil {
		return nil, nil, "", err
	}
	return train, test, EmbeddedFashionMNISTSource, nil
}

func loadSplits(fsys fs.FS) (train, test *Images, err error) {
	if train, err = LoadImages(fsys, "train"); err != nil {
		return nil, nil, err
	}
	if test, err = LoadImages(fsys, "t10k"); err != nil {
		return nil, nil, err
	}
	train.Name, test.Name = "fashion-mnist/train", "fashion-mnist/t10k"
	return train, test, nil
}

// WriteImages writes m under dir as SPLIT-images-idx3-ubyte.gz and
// SPLIT-labels-idx1-ubyte.gz (deterministic gzip), the layout LoadImages
// reads: a peer's shard directory. dir must exist.
func WriteImages(dir, split string, m *Images) error {
	if m.Rows <= 0 || m.Cols <= 0 || len(m.Pixels) != m.Len()*m.Features() {
		return fmt.Errorf("%w: WriteImages %s: %d pixels for %d images of %dx%d", ErrInvalidArgument, split, len(m.Pixels), m.Len(), m.Rows, m.Cols)
	}
	for _, f := range []struct {
		name string
		x    *IDX
	}{
		{split + "-images-idx3-ubyte.gz", &IDX{Type: TypeUbyte, Dims: []int{m.Len(), m.Rows, m.Cols}, Data: m.Pixels}},
		{split + "-labels-idx1-ubyte.gz", &IDX{Type: TypeUbyte, Dims: []int{m.Len()}, Data: m.Labels}},
	} {
		var buf bytes.Buffer
		if err := WriteIDXGzip(&buf, f.x); err != nil {
			return fmt.Errorf("datasets: %s: %w", f.name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("datasets: %w", err)
		}
	}
	return nil
}
