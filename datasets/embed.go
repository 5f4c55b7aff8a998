package datasets

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed data/fashion-mnist/*.gz data/asyoulik.txt
var embedded embed.FS

// EmbeddedFashionMNISTSource is the source string FashionMNIST reports for
// the embedded subset.
const EmbeddedFashionMNISTSource = "embedded:subset-6000/1000"

// EmbeddedFS returns the embedded data files: data/fashion-mnist/ (the
// subset, IDX gzip) and data/asyoulik.txt.
func EmbeddedFS() fs.FS { return embedded }

// EmbeddedFashionMNIST returns the embedded Fashion-MNIST subset: the first
// 6,000 training and the first 1,000 test images of the original files, in
// order (see data/fashion-mnist/README.md). Each call decodes afresh, so
// callers may modify the result.
func EmbeddedFashionMNIST() (train, test *Images, err error) {
	sub, err := fs.Sub(embedded, "data/fashion-mnist")
	if err != nil {
		return nil, nil, fmt.Errorf("datasets: embedded fashion-mnist: %w", err)
	}
	train, test, err = loadSplits(sub)
	if err != nil {
		return nil, nil, fmt.Errorf("datasets: embedded fashion-mnist: %w", err)
	}
	return train, test, nil
}
