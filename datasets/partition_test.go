package datasets

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/quick"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// checkPartition verifies that parts are sorted, disjoint and cover 0..n-1.
func checkPartition(t *testing.T, parts [][]int, n int) {
	t.Helper()
	seen := make([]bool, n)
	total := 0
	for j, p := range parts {
		if !slices.IsSorted(p) {
			t.Fatalf("part %d not sorted", j)
		}
		for _, i := range p {
			if i < 0 || i >= n {
				t.Fatalf("part %d holds index %d outside [0,%d)", j, i, n)
			}
			if seen[i] {
				t.Fatalf("index %d in two parts", i)
			}
			seen[i] = true
		}
		total += len(p)
	}
	if total != n {
		t.Fatalf("parts hold %d indices, want %d", total, n)
	}
}

func sizes(parts [][]int) []int {
	s := make([]int, len(parts))
	for j, p := range parts {
		s[j] = len(p)
	}
	return s
}

func equalParts(a, b [][]int) bool {
	return slices.EqualFunc(a, b, func(x, y []int) bool { return slices.Equal(x, y) })
}

func TestIIDProperties(t *testing.T) {
	prop := func(n16 uint16, k8 uint8, seed uint64) bool {
		n, k := int(n16%3000), int(k8%40)+1
		parts := IID(n, k, seed)
		checkPartition(t, parts, n)
		s := sizes(parts)
		if len(parts) != k || slices.Max(s)-slices.Min(s) > 1 {
			t.Errorf("n=%d k=%d: sizes %v", n, k, s)
			return false
		}
		if !equalParts(parts, IID(n, k, seed)) {
			t.Errorf("n=%d k=%d seed=%d: not deterministic", n, k, seed)
			return false
		}
		if n >= 20 && k >= 2 && equalParts(parts, IID(n, k, seed+1)) {
			t.Errorf("n=%d k=%d: seeds %d and %d give the same split", n, k, seed, seed+1)
			return false
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 300, Rand: rand.New(rand.NewSource(1))}); err != nil {
		t.Error(err)
	}
}

// Every index lands in each part with probability ~1/k.
func TestIIDUniform(t *testing.T) {
	const n, k, trials = 12, 3, 3000
	var hits [n][k]int
	for s := range uint64(trials) {
		for j, p := range IID(n, k, s) {
			for _, i := range p {
				hits[i][j]++
			}
		}
	}
	for i := range hits {
		for j, h := range hits[i] {
			if math.Abs(float64(h)-trials/k) > 5*math.Sqrt(trials*(1.0/k)*(1-1.0/k)) {
				t.Errorf("index %d in part %d %d times of %d", i, j, h, trials)
			}
		}
	}
}

func labelsOf(n, classes int, seed uint64) []int {
	r := newRNG(seed, 99)
	l := make([]int, n)
	for i := range l {
		l[i] = r.intn(classes)
	}
	return l
}

func TestDirichletProperties(t *testing.T) {
	prop := func(n16 uint16, k8, c8 uint8, a8 uint8, seed uint64) bool {
		k := int(k8%20) + 1
		n := k + int(n16%2000)
		classes := int(c8%12) + 1
		alpha := []float64{0.01, 0.1, 0.5, 1, 10, 1000}[a8%6]
		labels := labelsOf(n, classes, seed)
		parts, err := Dirichlet(labels, classes, k, alpha, seed)
		if err != nil {
			t.Errorf("n=%d k=%d: %v", n, k, err)
			return false
		}
		checkPartition(t, parts, n)
		if m := min(DirichletMinPart, n/k); slices.Min(sizes(parts)) < m {
			t.Errorf("n=%d k=%d alpha=%v: sizes %v below minimum %d", n, k, alpha, sizes(parts), m)
			return false
		}
		again, _ := Dirichlet(slices.Clone(labels), classes, k, alpha, seed)
		if !equalParts(parts, again) {
			t.Errorf("not deterministic")
			return false
		}
		// Different seeds give different splits — unless α is so small that every class goes
		// whole to one part, where with few parts and classes two seeds often agree.
		if n >= 100 && k >= 2 && alpha >= 0.5 {
			other, _ := Dirichlet(labels, classes, k, alpha, seed^0x5555)
			if equalParts(parts, other) {
				t.Errorf("n=%d k=%d alpha=%v: two seeds give the same split", n, k, alpha)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 200, Rand: rand.New(rand.NewSource(1))}); err != nil {
		t.Error(err)
	}
}

// skew is the mean over parts of the largest class's share of the part.
func skew(parts [][]int, labels []int, classes int) float64 {
	total := 0.0
	for _, p := range parts {
		h := make([]int, classes)
		for _, i := range p {
			h[labels[i]]++
		}
		total += float64(slices.Max(h)) / float64(len(p))
	}
	return total / float64(len(parts))
}

// Small alpha concentrates parts on few classes; large alpha is near IID.
func TestDirichletSkew(t *testing.T) {
	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		t.Fatal(err)
	}
	labels := train.IntLabels()
	for _, tc := range []struct {
		alpha    float64
		min, max float64
	}{
		{0.05, 0.6, 1.0},
		{0.5, 0.3, 0.7},
		{1000, 0.1, 0.15},
	} {
		var got float64
		for seed := range uint64(5) {
			parts, err := Dirichlet(labels, 10, 10, tc.alpha, seed)
			if err != nil {
				t.Fatal(err)
			}
			got += skew(parts, labels, 10) / 5
		}
		t.Logf("alpha=%v: mean largest-class share %.3f", tc.alpha, got)
		if got < tc.min || got > tc.max {
			t.Errorf("alpha=%v: mean largest-class share %.3f outside [%v, %v]", tc.alpha, got, tc.min, tc.max)
		}
	}
}

// DirichletEqual: a partition into parts of equal size (within one), deterministic, different
// for another seed, and label-skewed like Dirichlet: small alpha concentrates the parts on few
// classes, large alpha is near IID.
func TestDirichletEqual(t *testing.T) {
	prop := func(n16 uint16, k8, c8 uint8, a8 uint8, seed uint64) bool {
		k := int(k8%20) + 1
		n := k + int(n16%2000)
		classes := int(c8%12) + 1
		alpha := []float64{1e-300, 0.01, 0.1, 0.5, 1, 10, 1000}[a8%7]
		labels := labelsOf(n, classes, seed)
		parts, err := DirichletEqual(labels, classes, k, alpha, seed)
		if err != nil {
			t.Errorf("n=%d k=%d: %v", n, k, err)
			return false
		}
		checkPartition(t, parts, n)
		if sz := sizes(parts); slices.Max(sz)-slices.Min(sz) > 1 {
			t.Errorf("n=%d k=%d alpha=%v: sizes %v are not equal", n, k, alpha, sz)
			return false
		}
		again, _ := DirichletEqual(slices.Clone(labels), classes, k, alpha, seed)
		if !equalParts(parts, again) {
			t.Errorf("not deterministic")
			return false
		}
		if n >= 100 && k >= 2 && classes >= 2 && alpha >= 0.5 {
			if other, _ := DirichletEqual(labels, classes, k, alpha, seed^0x5555); equalParts(parts, other) {
				t.Errorf("n=%d k=%d alpha=%v: two seeds give the same split", n, k, alpha)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 200, Rand: rand.New(rand.NewSource(1))}); err != nil {
		t.Error(err)
	}

	train, _, err := EmbeddedFashionMNIST()
	if err != nil {
		t.Fatal(err)
	}
	labels := train.IntLabels()
	for _, tc := range []struct {
		alpha    float64
		min, max float64
	}{
		{0.05, 0.4, 0.61}, // six parts of a tenth each: a part can be at most 60 % one class
		{0.5, 0.22, 0.5},
		{1000, 0.1, 0.16},
	} {
		var got float64
		for seed := range uint64(5) {
			parts, err := DirichletEqual(labels, 10, 6, tc.alpha, seed)
			if err != nil {
				t.Fatal(err)
			}
			got += skew(parts, labels, 10) / 5
		}
		t.Logf("alpha=%v: mean largest-class share %.3f", tc.alpha, got)
		if got < tc.min || got > tc.max {
			t.Errorf("alpha=%v: mean largest-class share %.3f outside [%v, %v]", tc.alpha, got, tc.min, tc.max)
		}
	}
	for _, bad := range []struct {
		labels     []int
		classes, k int
		alpha      float64
	}{{[]int{0, 1}, 2, 0, 1}, {[]int{0, 1}, 2, 3, 1}, {[]int{0, 2}, 2, 1, 1}, {[]int{0, 1}, 2, 1, 0}, {[]int{0, 1}, 2, 1, math.Inf(1)}} {
		if _, err := DirichletEqual(bad.labels, bad.classes, bad.k, bad.alpha, 1); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("DirichletEqual(%v, %d, %d, %v): %v, want ErrInvalidArgument", bad.labels, bad.classes, bad.k, bad.alpha, err)
		}
	}
}

// The Gamma sampler has the right mean and variance (both = shape).
func TestLogGammaMoments(t *testing.T) {
	for _, a := range []float64{0.05, 0.3, 1, 2.5, 40} {
		r := newRNG(42, 7)
		const n = 40000
		var s, s2 float64
		for range n {
			x := math.Exp(r.logGamma(a))
			s += x
			s2 += x * x
		}
		mean := s / n
		v := s2/n - mean*mean
		se := math.Sqrt(a / n)
		if math.Abs(mean-a) > 5*se {
			t.Errorf("Gamma(%v): mean %.4f, want %v ± %.4f", a, mean, a, 5*se)
		}
		if math.Abs(v-a)/a > 0.15 {
			t.Errorf("Gamma(%v): variance %.4f, want ~%v", a, v, a)
		}
	}
}

func TestDirichletErrors(t *testing.T) {
	for _, tc := range []struct {
		labels     []int
		classes, k int
		alpha      float64
		msg        string
	}{
		{[]int{0, 1}, 2, 0, 1, "k >= 1"},
		{[]int{0, 1}, 0, 1, 1, "classes >= 1"},
		{[]int{0, 1}, 2, 1, 0, "alpha 0"},
		{[]int{0, 1}, 2, 1, -1, "alpha -1"},
		{[]int{0, 1}, 2, 1, math.NaN(), "alpha NaN"},
		{[]int{0, 1}, 2, 1, math.Inf(1), "alpha +Inf"},
		{[]int{0, 2}, 2, 1, 1, "label 2 of sample 1"},
		{[]int{0, -1}, 2, 1, 1, "label -1"},
		{[]int{0, 1}, 2, 3, 1, "2 samples cannot fill 3 parts"},
	} {
		_, err := Dirichlet(tc.labels, tc.classes, tc.k, tc.alpha, 1)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: got %v, want %q", tc, err, tc.msg)
		}
	}
}

func TestNatural(t *testing.T) {
	groups := []string{"b", "a", "c", "a", "b", "a", "d", "c", "a"}
	// a:4 b:2 c:2 d:1 → a→0, b→1, c→2 (tie b<c), d→1 (parts 1,2 tie at 2 → 1).
	got := Natural(groups, 3)
	want := [][]int{{1, 3, 5, 8}, {0, 4, 6}, {2, 7}}
	if !equalParts(got, want) {
		t.Errorf("Natural = %v, want %v", got, want)
	}
	prop := func(g []uint8, k8 uint8) bool {
		k := int(k8%10) + 1
		names := make([]string, len(g))
		for i, x := range g {
			names[i] = fmt.Sprintf("speaker%d", x%13)
		}
		parts := Natural(names, k)
		checkPartition(t, parts, len(names))
		owner := map[string]int{}
		for j, p := range parts {
			for _, i := range p {
				if o, ok := owner[names[i]]; ok && o != j {
					t.Errorf("group %s split over parts %d and %d", names[i], o, j)
					return false
				}
				owner[names[i]] = j
			}
		}
		// Shuffling which index holds which group must not change part sizes.
		rev := slices.Clone(names)
		slices.Reverse(rev)
		return slices.Equal(sizes(Natural(rev, k)), sizes(parts)) && equalParts(parts, Natural(names, k))
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 300, Rand: rand.New(rand.NewSource(1))}); err != nil {
		t.Error(err)
	}
}

func TestNaturalPlay(t *testing.T) {
	p, err := EmbeddedPlay()
	if err != nil {
		t.Fatal(err)
	}
	parts, err := Partition{Kind: KindNatural}.Split(Samples{Groups: p.Groups()}, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, parts, len(p.Speeches))
	// ROSALIND's 201 speeches are a quarter of 811: she gets a part nearly alone.
	t.Logf("speeches per part %v", sizes(parts))
	if s := sizes(parts); slices.Max(s) > 260 || slices.Min(s) < 140 {
		t.Errorf("unbalanced natural split %v", s)
	}
}

func TestParsePartition(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Partition
		str  string
	}{
		{"iid", Partition{}, "iid"},
		{" natural ", Partition{Kind: KindNatural}, "natural"},
		{"dirichlet:0.5", Partition{Kind: KindDirichlet, Alpha: 0.5}, "dirichlet:0.5"},
		{"dirichlet:1e-3", Partition{Kind: KindDirichlet, Alpha: 0.001}, "dirichlet:0.001"},
		{"dirichlet:100", Partition{Kind: KindDirichlet, Alpha: 100}, "dirichlet:100"},
		{"dirichlet-equal:0.5", Partition{Kind: KindDirichletEqual, Alpha: 0.5}, "dirichlet-equal:0.5"},
		{"iid:1, 2,4.50", Partition{weights: "1,2,4.5"}, "iid:1,2,4.5"},
	} {
		p, err := ParsePartition(tc.spec)
		if err != nil || p != tc.want || p.String() != tc.str {
			t.Errorf("ParsePartition(%q) = %+v (%q), %v; want %+v (%q)", tc.spec, p, p, err, tc.want, tc.str)
		}
		if q, err := ParsePartition(p.String()); err != nil || q != p {
			t.Errorf("%q does not round-trip: %+v, %v", p, q, err)
		}
	}
	for _, bad := range []string{"", "foo", "IID", "iid:3", "iid:1,-2", "iid:1,x", "iid:0,1", "iid:1,", "iid:1,2e7", "natural:x", "dirichlet", "dirichlet:", "dirichlet:-1", "dirichlet:0", "dirichlet:abc", "dirichlet:NaN", "dirichlet:Inf", "dirichlet:0.5:1", "dirichlet-equal", "dirichlet-equal:0", "dirichlet-equal:x"} {
		_, err := ParsePartition(bad)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParsePartition(%q): %v; want ErrInvalidArgument quoting the spec", bad, err)
		}
	}
	// String round-trips every alpha exactly.
	prop := func(bitsv uint64) bool {
		a := math.Abs(math.Float64frombits(bitsv))
		p := Partition{Kind: KindDirichlet, Alpha: a}
		if p.Validate() != nil {
			return true
		}
		q, err := ParsePartition(p.String())
		return err == nil && q == p
	}
	if err := quick.Check(prop, nil); err != nil {
		t.Error(err)
	}
}

func TestSplitErrors(t *testing.T) {
	dir := Partition{Kind: KindDirichlet, Alpha: 1}
	nat := Partition{Kind: KindNatural}
	for _, tc := range []struct {
		p Partition
		s Samples
		k int
	}{
		{Partition{}, Samples{N: 5}, 0},
		{Partition{}, Samples{N: 2}, 3},
		{Partition{}, Samples{N: 3, Labels: []int{0, 1}}, 1},
		{Partition{Kind: 9}, Samples{N: 3}, 1},
		{Partition{Kind: KindDirichlet}, Samples{Labels: []int{0, 1}}, 1},
		{dir, Samples{N: 4}, 2},
		{nat, Samples{N: 4}, 2},
		{nat, Samples{Groups: []string{"a", "a", "b"}}, 3},
	} {
		if parts, err := tc.p.Split(tc.s, tc.k, 1); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%v.Split(%+v, %d) = %v, %v; want ErrInvalidArgument", tc.p, tc.s, tc.k, parts, err)
		}
	}
	parts, err := dir.Split(Samples{Labels: []int{0, 1, 2, 0, 1, 2}}, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, parts, 6)
}

// A small partition of each kind, compared with testdata/partitions.golden.
// Run with -update to rewrite it after an intended change.
func TestPartitionGolden(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, "IID(n=20, k=3, seed=1): %v\n", IID(20, 3, 1))
	fmt.Fprintf(&b, "IID(n=20, k=3, seed=2): %v\n", IID(20, 3, 2))
	labels := []int{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0, 1, 1, 2, 2, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0}
	labels = append(labels, labels...) // 60 samples: minimum part size 10 < 60/3
	for _, a := range []float64{0.1, 1, 100} {
		parts, err := Dirichlet(labels, 3, 3, a, 7)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "Dirichlet(labels=%v, classes=3, k=3, alpha=%v, seed=7): %v\n", labels, a, parts)
	}
	groups := []string{"ROSALIND", "CELIA", "ROSALIND", "ORLANDO", "ADAM", "ROSALIND", "CELIA", "ORLANDO", "JAQUES", "ADAM", "ROSALIND"}
	fmt.Fprintf(&b, "Natural(groups=%q, k=3): %v\n", groups, Natural(groups, 3))
	path := filepath.Join("testdata", "partitions.golden")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("partitions changed; got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func BenchmarkDirichlet(b *testing.B) {
	labels := labelsOf(60000, 10, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Dirichlet(labels, 10, 16, 0.5, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		IID(60000, 16, 1)
	}
}

func TestSizedIID(t *testing.T) {
	p, err := ParsePartition("iid:1,2,3,4")
	if err != nil {
		t.Fatal(err)
	}
	parts, err := p.Split(Samples{N: 1003}, 4, 7)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, 1003)
	for j, part := range parts {
		// One sample each, then 999 dealt 1:2:3:4 by largest remainder.
		if want := []int{101, 201, 301, 400}[j]; len(part) != want {
			t.Errorf("part %d has %d samples, want %d", j, len(part), want)
		}
		if !slices.IsSorted(part) {
			t.Errorf("part %d not sorted", j)
		}
		for _, i := range part {
			if seen[i] {
				t.Fatalf("sample %d in two parts", i)
			}
			seen[i] = true
		}
	}
	again, _ := p.Split(Samples{N: 1003}, 4, 7)
	if !slices.EqualFunc(parts, again, slices.Equal) {
		t.Error("same seed, different split")
	}
	if _, err := p.Split(Samples{N: 1003}, 3, 7); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("4 sizes for 3 parts: %v", err)
	}
	if _, err := SizedIID(2, []float64{1, 1, 1}, 0); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("2 samples in 3 parts: %v", err)
	}
	tiny, err := SizedIID(3, []float64{1, 1e6, 1}, 0)
	if err != nil || len(tiny[0]) != 1 || len(tiny[2]) != 1 {
		t.Errorf("every part gets a sample: %v, %v", tiny, err)
	}
}
