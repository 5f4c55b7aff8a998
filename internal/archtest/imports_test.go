package archtest

import (
	"go/ast"
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

// layers lists, per package directory, the project packages its code may import (the longest
// matching directory's rule applies; a package may always import its own subpackages). "*" is
// anything: the CLI wires everything.
var layers = map[string][]string{
	// Leaves.
	"datasets":  {},
	"compress":  {},
	"consensus": {},
	"transport": {},
	"internal":  {},
	// The wire: data-plane and client-API messages, error codes.
	"protocol": {"consensus"},
	// Training, and a proposal's settings turned into training settings.
	"trainer": {"compress", "datasets"},
	// Tensor files, and a model's layout mapped to and from them.
	"trainer/safetensors": {},
	"trainer/export":      {"trainer/nn", "trainer/safetensors"},
	"trainer/generate":    {"trainer/nn", "trainer/export", "trainer/safetensors"},
	// Pipeline stages of a model: schedules and the step driver, and their link over QUIC.
	"trainer/pipeline":          {"trainer", "trainer/nn", "compress"},
	"trainer/pipeline/quiclink": {"trainer/pipeline", "trainer", "trainer/nn", "compress", "transport"},
	"spec":                      {"consensus", "compress", "trainer", "protocol"},
	// The member's side of the cluster, and the training process built on it.
	"client": {"consensus", "protocol", "transport"},
	"peer":   {"client", "spec", "protocol", "transport", "consensus", "trainer", "compress", "datasets"},
	// The coordinator service and its pure parts.
	"coordinator":             {"consensus", "protocol", "transport", "trainer", "compress", "datasets", "spec"},
	"coordinator/round":       {"consensus", "protocol", "compress", "trainer"},
	"coordinator/attribution": {"consensus"},
	"coordinator/report":      {"consensus"},
	"coordinator/audit":       {"consensus", "spec", "trainer"},
	"coordinator/web":         {},
	// Whole cohorts in one process, and the CLI.
	"sim": {"peer", "coordinator", "client", "spec", "protocol", "transport", "consensus", "trainer", "compress", "datasets", "internal/netutil"},
	"cmd": {"*"},
}

// shared are dependency-free helpers any package may use.
var shared = []string{"internal/msgcheck", "internal/wirecode", "internal/par", "internal/atomicfile"}

// testOnly lets a package's tests import more than its code may: test helpers; the consensus
// benchmarks, which measure raft on the transport's authenticated stream layer (consensus itself
// knows only its StreamLayer interface); the coordinator's tests, whose members use the client.
var testOnly = map[string][]string{
	"":            {"internal/netutil", "internal/forge"},
	"consensus":   {"transport"},
	"coordinator": {"client"}, // members talk to a real cluster in the coordinator's tests
}

// confined lists third-party import prefixes and the only directories that may import them.
var confined = map[string][]string{
	"gorgonia.org/":                  {"trainer/nn"},
	"github.com/hashicorp/raft":      {"consensus"},
	"github.com/hashicorp/go-hclog":  {"consensus"},
	"github.com/quic-go/quic-go":     {"transport"},
	"gonum.org/v1/plot":              {"coordinator/report"},
	"github.com/prometheus/":         {"coordinator"},
	"github.com/klauspost/compress/": {"compress"},
}

// thirdParty lists, for the leaves, every third-party prefix they may import at all.
var thirdParty = map[string][]string{
	"compress":  {"github.com/klauspost/compress/"},
	"datasets":  {},
	"protocol":  {},
	"consensus": {"github.com/hashicorp/", "github.com/vmihailenco/msgpack/", "github.com/hdevalence/ed25519consensus"},
}

// pure are the packages whose code decides and computes only: no clock, no goroutine, no
// socket, file or process. Time and randomness come in as arguments.
var pure = []string{"coordinator/round", "coordinator/attribution", "spec", "protocol"}

// impureImports and impureCalls are what a pure package may not use.
var (
	impureImports = []string{"net", "os", "os/exec", "os/signal", "syscall", "io/ioutil", "math/rand"}
	impureCalls   = map[string][]string{
		"time": {"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "NewTimer", "NewTicker", "Tick"},
	}
)

type file struct {
	rel, dir string
	test     bool
	ast      *ast.File
}

func walk(t *testing.T) []file {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal("archtest must sit two levels below the module root")
	}
	fset := token.NewFileSet()
	var out []file
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
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		out = append(out, file{rel: rel, dir: filepath.ToSlash(filepath.Dir(rel)), test: strings.HasSuffix(path, "_test.go"), ast: f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 100 {
		t.Fatalf("checked only %d files: is the walk rooted at the module?", len(out))
	}
	return out
}

func imports(f file) []string {
	var out []string
	for _, imp := range f.ast.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		out = append(out, p)
	}
	return out
}

func TestImportsPointOneWay(t *testing.T) {
	for _, f := range walk(t) {
		for _, p := range imports(f) {
			inner, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			if err := mayImport(f.dir, inner, f.test); err != "" {
				t.Errorf("%s imports %s: %s", f.rel, p, err)
			}
		}
	}
}

func TestThirdPartyStaysInItsWrapper(t *testing.T) {
	for _, f := range walk(t) {
		for _, p := range imports(f) {
			if strings.HasPrefix(p, module) || !strings.Contains(strings.Split(p, "/")[0], ".") {
				continue // project or standard library
			}
			for prefix, dirs := range confined {
				if strings.HasPrefix(p, prefix) && !within(f.dir, dirs) {
					t.Errorf("%s imports %s: only %v may", f.rel, p, dirs)
				}
			}
			if f.test {
				continue
			}
			if allowed, ok := rule(thirdParty, f.dir); ok && !slices.ContainsFunc(allowed, func(pre string) bool { return strings.HasPrefix(p, pre) }) {
				t.Errorf("%s imports %s: %s may import only %v of third-party code", f.rel, p, top(f.dir), allowed)
			}
		}
	}
}

func TestPurePackagesReadNoClockAndStartNoGoroutine(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range walk(t) {
		if f.test || !within(f.dir, pure) {
			continue
		}
		seen[f.dir] = true
		for _, p := range imports(f) {
			if slices.Contains(impureImports, p) || strings.HasPrefix(p, "net/") {
				t.Errorf("%s imports %s: %s is pure (no sockets, files or processes)", f.rel, p, f.dir)
			}
		}
		ast.Inspect(f.ast, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s starts a goroutine: %s is pure", f.rel, f.dir)
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && slices.Contains(impureCalls[x.Name], n.Sel.Name) {
					t.Errorf("%s uses %s.%s: %s is pure (time is an argument)", f.rel, x.Name, n.Sel.Name, f.dir)
				}
			}
			return true
		})
	}
	for _, d := range pure {
		if _, err := os.Stat(filepath.Join("../..", d)); err == nil && !seen[d] {
			t.Errorf("pure package %s has no code checked", d)
		}
	}
}

// rule returns the rule of the longest directory in rules that holds dir.
func rule(rules map[string][]string, dir string) ([]string, bool) {
	best, found := "", false
	for d := range rules {
		if within(dir, []string{d}) && len(d) >= len(best) {
			best, found = d, true
		}
	}
	return rules[best], found
}

// mayImport returns why dir may not import the project package inner ("" if it may).
func mayImport(dir, inner string, test bool) string {
	if within(inner, []string{dir}) || slices.Contains(shared, inner) {
		return "" // its own subpackages, or a shared helper
	}
	if test && (within(inner, testOnly[""]) || within(inner, testOnly[top(dir)])) {
		return ""
	}
	allowed, ok := rule(layers, dir)
	if !ok {
		return "a new top-level directory must be given its rule in archtest's layers"
	}
	if slices.Contains(allowed, "*") || within(inner, allowed) {
		return ""
	}
	return dir + " may import only " + strings.Join(allowed, ", ") + " of the project"
}

func top(dir string) string { t, _, _ := strings.Cut(dir, "/"); return t }

func within(dir string, dirs []string) bool {
	for _, d := range dirs {
		if dir == d || strings.HasPrefix(dir, d+"/") {
			return true
		}
	}
	return false
}

func TestRulesCatchAForbiddenImport(t *testing.T) {
	for _, c := range []struct {
		dir, inner string
		test, ok   bool
	}{
		{"datasets", "trainer", false, false},
		{"consensus", "transport", false, false},
		{"consensus", "transport", true, true},
		{"trainer", "coordinator", false, false},
		{"trainer", "compress", false, true},
		{"trainer", "trainer/nn", false, true},
		{"peer", "coordinator", false, false},
		{"peer", "client", false, true},
		{"coordinator/report", "trainer", false, false},
		{"coordinator/audit", "trainer", false, true},
		{"coordinator/audit", "sim", false, false},
		{"coordinator/audit", "transport", false, false},
		{"coordinator/round", "transport", false, false},
		{"coordinator", "coordinator/round", false, true},
		{"client", "coordinator", false, false},
		{"coordinator", "peer", false, false},
		{"transport", "internal/wirecode", false, true},
		{"transport", "internal/forge", false, false},
		{"coordinator", "internal/forge", true, true},
		{"cmd/cohort", "sim", false, true},
		{"trainer/safetensors", "trainer/nn", false, false},
		{"trainer/export", "trainer/safetensors", false, true},
		{"trainer/export", "coordinator", false, false},
		{"newdir", "consensus", false, false},
	} {
		if got := mayImport(c.dir, c.inner, c.test) == ""; got != c.ok {
			t.Errorf("mayImport(%s, %s, test=%v) = %v, want %v", c.dir, c.inner, c.test, got, c.ok)
		}
	}
	if within("coordinator", confined["gorgonia.org/"]) {
		t.Error("gorgonia is not confined to trainer/nn")
	}
}
