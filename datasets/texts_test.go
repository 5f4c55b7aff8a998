package datasets

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"
)

func TestLoadTexts(t *testing.T) {
	fsys := fstest.MapFS{
		"one.txt":        {Data: []byte("hello\nworld\n")},
		"dir/b.txt":      {Data: []byte("bee\n")},
		"dir/a.txt":      {Data: []byte("ay\n")},
		"dir/notes.md":   {Data: []byte("\xff")},
		"dir/sub/c.txt":  {Data: []byte("nested\n")},
		"bad.txt":        {Data: []byte("ok\xffno")},
		"nul.txt":        {Data: []byte("a\x00b")},
		"empty.txt":      {Data: nil},
		"big.txt":        {Data: make([]byte, MaxTextBytes+1)},
		"none/x.md":      {Data: []byte("x")},
		"emptydir/a.txt": {Data: nil},
	}
	for _, tc := range []struct {
		name    string
		want    []Document
		err     error
		errText string
	}{
		{name: "one.txt", want: []Document{{"one.txt", "hello\nworld\n"}}},
		{name: "dir", want: []Document{{"a.txt", "ay\n"}, {"b.txt", "bee\n"}}},
		{name: "bad.txt", err: ErrMalformed, errText: "bad.txt: datasets: malformed data: invalid UTF-8 at byte offset 2"},
		{name: "nul.txt", err: ErrMalformed, errText: "offset 1"},
		{name: "empty.txt", err: ErrEmpty, errText: "empty.txt"},
		{name: "big.txt", err: ErrTooLarge, errText: "big.txt"},
		{name: "none", err: ErrNotFound, errText: "no .txt files"},
		{name: "emptydir", err: ErrEmpty, errText: "emptydir/a.txt"},
		{name: "missing.txt", errText: "missing.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadTexts(fsys, tc.name)
			if tc.errText != "" {
				if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want %v containing %q", err, tc.err, tc.errText)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestSplitText(t *testing.T) {
	for _, tc := range []struct {
		in         string
		frac       float64
		train, val string
	}{
		{"0123456789", 0.9, "012345678", "9"},
		{"0123456789", 0, "", "0123456789"},
		{"0123456789", 1, "0123456789", ""},
		{"", 0.9, "", ""},
		{"aé", 0.9, "a", "é"},   // cut inside é moves back
		{"日本語", 0.5, "日", "本語"}, // 9 bytes, cut 4 → 3
	} {
		tr, va, err := SplitText([]byte(tc.in), tc.frac)
		if err != nil || string(tr) != tc.train || string(va) != tc.val {
			t.Errorf("SplitText(%q, %v) = %q, %q, %v; want %q, %q", tc.in, tc.frac, tr, va, err, tc.train, tc.val)
		}
	}
	for _, f := range []float64{-0.1, 1.1} {
		if _, _, err := SplitText([]byte("x"), f); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("frac %v: err = %v", f, err)
		}
	}
}

const speakerSample = `First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

MENENIUS:
Why, masters, my good friends,
mine honest neighbours.

First Citizen:
We know't, we know't.
`

func TestParseSpeakerText(t *testing.T) {
	p, err := ParseSpeakerText("s.txt", speakerSample)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Speeches) != 6 || p.Speeches[4].Speaker != "MENENIUS" || p.Speeches[4].Text != "Why, masters, my good friends,\nmine honest neighbours." {
		t.Fatalf("parsed %+v", p.Speeches)
	}
	if got := WriteSpeakerText(p.Speeches); got != speakerSample {
		t.Fatalf("round trip:\n%s", got)
	}
	if _, err := ParseSpeakerText("x", "no speakers here\n"); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
}

// checkText verifies that the parts of an iid or contiguous split hold every
// line once.
func checkTextParts(t *testing.T, docs []Document, parts [][]Document) {
	t.Helper()
	var want, got []string
	for _, d := range docs {
		for _, l := range SplitLines(d.Text) {
			want = append(want, d.Name+"|"+l)
		}
	}
	for _, part := range parts {
		for _, d := range part {
			for _, l := range SplitLines(d.Text) {
				got = append(got, d.Name+"|"+l)
			}
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("parts do not hold exactly the input's lines: %d lines, want %d", len(got), len(want))
	}
}

func randomDocs(r *rand.Rand) []Document {
	docs := make([]Document, 1+r.IntN(3))
	for i := range docs {
		var b strings.Builder
		for range 1 + r.IntN(40) {
			fmt.Fprintf(&b, "line %d %s\n", r.IntN(1000), strings.Repeat("x", r.IntN(30)))
		}
		docs[i] = Document{Name: fmt.Sprintf("d%d.txt", i), Text: b.String()}
	}
	return docs
}

func TestTextPartitionProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		docs := randomDocs(r)
		k := 1 + r.IntN(6)
		nlines := 0
		for _, d := range docs {
			nlines += len(SplitLines(d.Text))
		}
		for _, spec := range []string{"iid", "contiguous"} {
			p, _ := ParseTextPartition(spec)
			parts, err := p.Split(docs, k, uint64(trial))
			if nlines < k {
				if !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("%s: %d lines, %d parts: err = %v", spec, nlines, k, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", spec, err)
			}
			checkTextParts(t, docs, parts)
			again, _ := p.Split(docs, k, uint64(trial))
			if !slices.EqualFunc(parts, again, slices.Equal) {
				t.Fatalf("%s: not deterministic", spec)
			}
			switch spec {
			case "iid":
				lo, hi := nlines, 0
				for _, part := range parts {
					n := 0
					for _, d := range part {
						n += len(SplitLines(d.Text))
					}
					lo, hi = min(lo, n), max(hi, n)
				}
				if hi-lo > 1 {
					t.Fatalf("iid: part sizes %d..%d lines", lo, hi)
				}
			case "contiguous":
				// Concatenating the parts in order gives the documents back.
				var all, want strings.Builder
				for _, part := range parts {
					for _, d := range part {
						all.WriteString(d.Text)
					}
				}
				for _, d := range docs {
					want.WriteString(d.Text)
				}
				if all.String() != want.String() {
					t.Fatalf("contiguous: parts out of order")
				}
			}
		}
	}
}

func TestContiguousBalanced(t *testing.T) {
	text := strings.Repeat("0123456789\n", 1000)
	parts, err := TextPartition{Kind: TextContiguous}.Split([]Document{{"a.txt", text}}, 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	for j, p := range parts {
		if n := len(p[0].Text); n < len(text)/7-11 || n > len(text)/7+11 {
			t.Errorf("part %d: %d bytes, want %d ± one line", j, n, len(text)/7)
		}
	}
}

func TestTextPartitionIIDChunks(t *testing.T) {
	text := strings.Repeat("héllo wörld ", 100)
	parts, err := TextPartition{Chunk: 7}.Split([]Document{{"a.txt", text}}, 3, 9)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, p := range parts {
		for _, d := range p {
			if !utf8.ValidString(d.Text) {
				t.Fatalf("chunk cut inside a rune")
			}
			total += len(d.Text)
		}
	}
	if total != len(text) {
		t.Fatalf("%d bytes in parts, want %d", total, len(text))
	}
}

func TestTextPartitionSpeakerAndPlay(t *testing.T) {
	docs := []Document{{"coriolanus.txt", speakerSample}, {"asyoulik.txt", EmbeddedText()}}
	parts, err := TextPartition{Kind: TextSpeaker}.Split(docs, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	owner := map[string]int{}
	total := 0
	for j, part := range parts {
		for _, d := range part {
			p, err := ParseSpeakerText(d.Name, d.Text)
			if err != nil {
				t.Fatalf("part %d %s: %v", j, d.Name, err)
			}
			for _, s := range p.Speeches {
				if o, ok := owner[s.Speaker]; ok && o != j {
					t.Fatalf("speaker %s in parts %d and %d", s.Speaker, o, j)
				}
				owner[s.Speaker] = j
				total++
			}
		}
	}
	if total != 6+811 {
		t.Fatalf("%d speeches in parts, want %d", total, 6+811)
	}
	parts, err = TextPartition{Kind: TextPlay}.Split(docs, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts[0]) != 1 || len(parts[1]) != 1 || parts[0][0].Name != "asyoulik.txt" || parts[1][0].Name != "coriolanus.txt" {
		t.Fatalf("play split: %v / %v", len(parts[0]), len(parts[1]))
	}
	if _, err := (TextPartition{Kind: TextPlay}).Split(docs, 3, 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("3 parts from 2 plays: err = %v", err)
	}
}

// TestTextPartitionGolden pins the output of each kind on a small input, so
// that a change of algorithm shows.
func TestTextPartitionGolden(t *testing.T) {
	docs := []Document{{"c.txt", speakerSample}}
	var b strings.Builder
	for _, spec := range []string{"iid", "iid:16", "contiguous", "speaker"} {
		p, err := ParseTextPartition(spec)
		if err != nil {
			t.Fatal(err)
		}
		parts, err := p.Split(docs, 3, 42)
		if err != nil {
			t.Fatal(err)
		}
		for j, part := range parts {
			for _, d := range part {
				fmt.Fprintf(&b, "%s part %d %s %d bytes %x\n", spec, j, d.Name, len(d.Text), HashText(d.Text).prefix())
			}
		}
	}
	golden := filepath.Join("testdata", "textpartitions.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if b.String() != string(want) {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestParseTextPartition(t *testing.T) {
	for _, s := range []string{"iid", "iid:64", "contiguous", "speaker", "play"} {
		p, err := ParseTextPartition(s)
		if err != nil || p.String() != s {
			t.Errorf("%q: %v, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "natural", "iid:0", "iid:-1", "iid:x", "speaker:2", "iid:99999999"} {
		if _, err := ParseTextPartition(s); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%q: err = %v", s, err)
		}
	}
}

func words(r *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		fmt.Fprintf(&b, "w%d ", r.Uint64())
	}
	return b.String()
}

func TestTextFingerprintOverlap(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	x, y, z := words(r, 2000), words(r, 2000), words(r, 2000)
	fp := func(s string) Fingerprint { return TextFingerprint([]Document{{"a.txt", s}}) }
	a := fp(x + y)
	for _, tc := range []struct {
		name   string
		b      Fingerprint
		lo, hi float64
	}{
		{"copy", fp(x + y), 1, 1},
		{"re-wrapped copy", fp(strings.ToUpper(strings.ReplaceAll(x+y, " ", "\n"))), 1, 1},
		{"half overlap", fp(y + z), 0.22, 0.5},
		{"unrelated", fp(z + words(r, 2000)), 0, 0.05},
	} {
		if j := a.Overlap(tc.b); j < tc.lo || j > tc.hi {
			t.Errorf("%s: overlap %.3f, want [%v, %v]", tc.name, j, tc.lo, tc.hi)
		}
	}
	if a != fp(x+y) {
		t.Fatal("fingerprint not deterministic")
	}
}

func TestTinyShakespeare(t *testing.T) {
	path := os.Getenv("COHORT_TINYSHAKESPEARE")
	if path == "" {
		t.Skip("set COHORT_TINYSHAKESPEARE to Tiny Shakespeare's input.txt")
	}
	docs, err := LoadTexts(os.DirFS(filepath.Dir(path)), filepath.Base(path))
	if err != nil {
		t.Fatal(err)
	}
	parts, err := TextPartition{Kind: TextSpeaker}.Split(docs, 8, 0)
	if err != nil {
		t.Fatal(err)
	}
	for j, part := range parts {
		p, err := ParseSpeakerText(part[0].Name, part[0].Text)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("peer %d: %d bytes, %d speeches, %d speakers", j+1, len(part[0].Text), len(p.Speeches), len(p.Speakers()))
	}
}

func FuzzLoadTexts(f *testing.F) {
	f.Add([]byte("hello\n"))
	f.Add([]byte("a\x00b"))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte(strings.Repeat("x", 1<<16)))
	f.Fuzz(func(t *testing.T, in []byte) {
		docs, err := LoadTexts(fstest.MapFS{"d/a.txt": {Data: in}}, "d")
		if err != nil {
			return
		}
		if !utf8.ValidString(docs[0].Text) || strings.IndexByte(docs[0].Text, 0) >= 0 || docs[0].Text == "" {
			t.Fatalf("accepted %q", in)
		}
		tr, va, err := SplitText(in, 0.9)
		if err != nil || !utf8.Valid(tr) || !utf8.Valid(va) || len(tr)+len(va) != len(in) {
			t.Fatalf("SplitText broke valid UTF-8")
		}
	})
}

func FuzzParseSpeakerText(f *testing.F) {
	f.Add(speakerSample)
	f.Add("A:\n\x00\n")
	f.Add("A:\n" + strings.Repeat("y", 1<<16))
	f.Add("B:\nx\xff\n")
	f.Fuzz(func(t *testing.T, in string) {
		p, err := ParseSpeakerText("f.txt", in)
		if err != nil {
			return
		}
		q, err := ParseSpeakerText("f.txt", WriteSpeakerText(p.Speeches))
		if err != nil || !slices.Equal(p.Speeches, q.Speeches) {
			t.Fatalf("round trip: %v", err)
		}
		for _, spec := range []string{"speaker", "iid", "contiguous"} {
			tp, _ := ParseTextPartition(spec)
			tp.Split([]Document{{"f.txt", in}}, 2, 1) // must not panic
		}
	})
}

func (h Hash) prefix() []byte { return h[:4] }
