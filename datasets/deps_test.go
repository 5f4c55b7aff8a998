package datasets

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// datasets is a leaf: it imports no other package of the module.
func TestNoProjectImports(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "github.com/cohortlab/cohort") && !strings.HasPrefix(p, "github.com/cohortlab/cohort/datasets") {
				t.Errorf("%s imports %s; datasets must not import other project packages", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
