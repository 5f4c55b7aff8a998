package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/cohortlab/cohort/"

// allowed lists, per top-level package directory, the project packages it may import.
var allowed = map[string][]string{
	"datasets":    {},
	"compress":    {},
	"consensus":   {},
	"transport":   {"transport/"},
	"trainer":     {"trainer/", "compress", "datasets"},
	"coordinator": {"coordinator/", "trainer", "compress", "datasets", "consensus", "transport", "protocol"},
	"protocol":    {},
	"peer":        {"trainer", "coordinator", "protocol", "transport", "consensus", "compress", "datasets"},
	"sim":         {"peer", "trainer", "coordinator", "protocol", "transport", "consensus", "compress", "datasets"},
	"internal":    {"internal/"},
	"cmd":         {""}, // the CLI wires everything
}

// narrower tightens the rules for a subpackage, on top of its top-level directory's: the round
// engine is pure decision logic, with no transport, service or scoring under it.
var narrower = map[string][]string{
	"coordinator/round": {"consensus", "protocol", "compress", "trainer"},
}

// testOnly lets a package's tests import one more project package that its code may not: the
// consensus benchmarks measure raft on the transport's authenticated stream layer, which the
// coordinator wires in (consensus itself knows only its StreamLayer interface).
var testOnly = map[string]string{"consensus": "transport"}

// confined lists third-party import prefixes and the only directories that may import them.
var confined = map[string][]string{
	"gorgonia.org/":                 {"trainer/nn"},
	"github.com/hashicorp/raft":     {"consensus"},
	"github.com/quic-go/quic-go":    {"transport"},
	"github.com/hashicorp/go-hclog": {"consensus"},
	"gonum.org/v1/plot":             {"coordinator/report"},
	"github.com/prometheus/":        {"coordinator"},
}

func TestImportsPointOneWay(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || rel == "bin" || rel == "out" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		dir := filepath.ToSlash(filepath.Dir(rel))
		top, _, _ := strings.Cut(dir, "/")
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if inner, ok := strings.CutPrefix(p, module); ok {
				if inner == "internal/msgcheck" || inner == "internal/netutil" || inner == "internal/forge" {
					continue // dependency-free helpers any package may use
				}
				if testOnly[top] == inner && strings.HasSuffix(path, "_test.go") {
					continue
				}
				if !mayImport(top, dir, inner) {
					t.Errorf("%s imports %s: %s may import only %v", rel, p, top, allowed[top])
				}
				if rules, ok := narrower[dir]; ok && !slices.Contains(rules, inner) && !strings.HasPrefix(inner, dir+"/") {
					t.Errorf("%s imports %s: %s may import only %v", rel, p, dir, rules)
				}
				continue
			}
			for prefix, dirs := range confined {
				if strings.HasPrefix(p, prefix) && !within(dir, dirs) {
					t.Errorf("%s imports %s: only %v may", rel, p, dirs)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files: is the walk rooted at the module?", checked)
	}
}

func mayImport(top, dir, inner string) bool {
	if inner == dir || strings.HasPrefix(inner, dir+"/") {
		return true // a package and its own subpackages
	}
	rules, ok := allowed[top]
	if !ok {
		return false // a new top-level directory must be given rules here
	}
	for _, r := range rules {
		if r == "" || inner == strings.TrimSuffix(r, "/") || (strings.HasSuffix(r, "/") && strings.HasPrefix(inner, r)) || strings.HasPrefix(inner, r+"/") {
			return true
		}
	}
	return false
}

func within(dir string, dirs []string) bool {
	for _, d := range dirs {
		if dir == d || strings.HasPrefix(dir, d+"/") {
			return true
		}
	}
	return false
}

func TestRulesCatchAForbiddenImport(t *testing.T) {
	if mayImport("datasets", "datasets", "trainer") || mayImport("consensus", "consensus", "transport") ||
		mayImport("trainer", "trainer", "coordinator") || !mayImport("trainer", "trainer", "compress") ||
		!mayImport("trainer", "trainer", "trainer/nn") || within("coordinator", confined["gorgonia.org/"]) {
		t.Fatal("import rules do not say what the layout says")
	}
	if _, err := os.Stat("../../go.mod"); err != nil {
		t.Fatal("archtest must sit two levels below the module root")
	}
}
