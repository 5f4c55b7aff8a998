package datasets

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"
)

func TestParsePlayLayout(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		title    string
		want     []Speech
	}{
		{
			name:  "basic",
			in:    "\tA PLAY\n\n\tDRAMATIS PERSONAE\n\nKING\tof somewhere.\nFOOL\t|\n\t|  servants\n\n\nACT I\n\nSCENE I\tA hall.\n\n\t[Enter KING]\n\nKING\tHello there,\n\tmy friend.\n\nFOOL\tHi.\n\n\t[Exeunt]\n",
			title: "A PLAY",
			want:  []Speech{{"KING", "Hello there,\nmy friend."}, {"FOOL", "Hi."}},
		},
		{
			name:  "directions inline and across lines",
			in:    "T\n\nACT I\nA\t[Aside to B]  Quiet now.\n\t[Flourish. Enter B,\n\tC, and others]\n\tstill A speaking [pointing] here.\nB\t[Reads]\n\n\tA letter line.\n",
			title: "T",
			want:  []Speech{{"A", "Quiet now.\nstill A speaking here."}, {"B", "A letter line."}},
		},
		{
			name:  "headings end speeches, repeated title skipped, CRLF",
			in:    "PLAY\r\n\r\nACT I\r\nA\tone\r\n\tPLAY\r\n\tACT II\r\n\torphan line\r\nB\ttwo\r\n\tEPILOGUE\r\nC\tthree\r\n",
			title: "PLAY",
			want:  []Speech{{"A", "one"}, {"B", "two"}, {"C", "three"}},
		},
		{
			name:  "empty speeches dropped, mixed-case speakers kept",
			in:    "P\nJAQUES\t[Advancing]\nFirst Lord\tYes,\n  my lord.\n",
			title: "P",
			want:  []Speech{{"First Lord", "Yes,\nmy lord."}},
		},
	} {
		p, err := ParsePlay(tc.name, strings.NewReader(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if p.Title != tc.title || !reflect.DeepEqual(p.Speeches, tc.want) {
			t.Errorf("%s:\ngot  %q %q\nwant %q %q", tc.name, p.Title, p.Speeches, tc.title, tc.want)
		}
	}
}

// countSpeechLines is an independent oracle: lines after the cast list that
// start a speech ("NAME<TAB>...", NAME not a scene heading).
func countSpeechLines(text string) (speeches int, speakers map[string]int) {
	speakers = map[string]int{}
	inPlay := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "ACT ") {
			inPlay = true
		}
		name, _, ok := strings.Cut(l, "\t")
		if !inPlay || !ok || name == "" || strings.HasPrefix(name, "SCENE") {
			continue
		}
		speeches++
		speakers[name]++
	}
	return speeches, speakers
}

func TestEmbeddedPlay(t *testing.T) {
	p, err := EmbeddedPlay()
	if err != nil {
		t.Fatal(err)
	}
	n, bySpeaker := countSpeechLines(EmbeddedText())
	if p.Title != "AS YOU LIKE IT" || len(p.Speeches) != n || len(p.Speakers()) != len(bySpeaker) {
		t.Fatalf("%q: %d speeches by %d speakers; oracle %d by %d", p.Title, len(p.Speeches), len(p.Speakers()), n, len(bySpeaker))
	}
	t.Logf("%d speeches by %d speakers", len(p.Speeches), len(p.Speakers()))
	got := map[string]int{}
	for _, s := range p.Speeches {
		got[s.Speaker]++
		if strings.ContainsAny(s.Text, "[]") || strings.Contains(s.Text, "ACT ") || strings.Contains(s.Text, "SCENE") {
			t.Errorf("speech of %s holds a direction or heading: %q", s.Speaker, s.Text)
		}
	}
	if !reflect.DeepEqual(got, bySpeaker) {
		t.Errorf("speeches per speaker %v, oracle %v", got, bySpeaker)
	}
	if s := p.Speeches[0]; s.Speaker != "ORLANDO" || !strings.HasPrefix(s.Text, "As I remember, Adam,") {
		t.Errorf("first speech %q: %.30q", s.Speaker, s.Text)
	}
	if g := p.Groups(); len(g) != len(p.Speeches) || g[1] != "ADAM" {
		t.Errorf("groups %v", g[:2])
	}
	if txt := p.Text(); strings.Count(txt, "\n") < len(p.Speeches) || !strings.HasSuffix(txt, "bid me farewell.\n") {
		t.Errorf("Text() ends %q", txt[len(txt)-30:])
	}
}

func TestParsePlayErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     error
		msg      string
	}{
		{"nul.txt", "T\nA\thi\x00", ErrMalformed, "NUL byte at offset 6"},
		{"latin1.txt", "T\nA\tcaf\xe9\n", ErrMalformed, "invalid UTF-8 at byte offset 7"},
		{"prose.txt", "Just some prose\nwith no speakers.\n", ErrMalformed, "no speeches"},
		{"empty.txt", "", ErrMalformed, "no speeches"},
	} {
		_, err := ParsePlay(tc.name, strings.NewReader(tc.in))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %v naming the file and %q", tc.name, err, tc.want, tc.msg)
		}
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestTextTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 64 MiB")
	}
	_, err := ParsePlay("big.txt", io.LimitReader(repeatReader('a'), MaxTextBytes+10))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "big.txt") {
		t.Errorf("got %v", err)
	}
}

func TestLoadText(t *testing.T) {
	fsys := fstest.MapFS{
		"ok.txt":  {Data: []byte("héllo\nworld\n")},
		"bin.dat": {Data: []byte{'a', 0, 'b'}},
		"bad.txt": {Data: []byte("ab\xff")},
	}
	if s, err := LoadText(fsys, "ok.txt"); err != nil || s != "héllo\nworld\n" {
		t.Errorf("ok.txt: %q, %v", s, err)
	}
	for name, msg := range map[string]string{"bin.dat": "NUL", "bad.txt": "invalid UTF-8 at byte offset 2", "missing.txt": "not exist"} {
		_, err := LoadText(fsys, name)
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: got %v, want an error naming the file and %q", name, err, msg)
		}
	}
}

func TestVocab(t *testing.T) {
	p, err := EmbeddedPlay()
	if err != nil {
		t.Fatal(err)
	}
	text := p.Text()
	v := NewVocab(text)
	ids := v.Encode(text)
	if got := v.Decode(ids); got != text {
		t.Fatal("Decode(Encode(play)) differs from the play")
	}
	if utf8.RuneCountInString(text) != len(ids) || slices.Contains(ids, UNK) {
		t.Errorf("%d ids for %d runes, UNK present: %v", len(ids), utf8.RuneCountInString(text), slices.Contains(ids, UNK))
	}
	rs := v.Runes()
	if !slices.IsSorted(rs) || v.Size() != len(rs)+1 {
		t.Errorf("runes not sorted or size %d != %d+1", v.Size(), len(rs))
	}
	for i, id := range v.Encode(string(rs)) {
		if id != i+1 {
			t.Fatalf("rune %q has id %d, want %d", rs[i], id, i+1)
		}
	}
	// Same characters in another order and multiplicity: same vocabulary.
	w := NewVocab(reverse(text) + text[:100])
	if !slices.Equal(w.Runes(), rs) {
		t.Error("vocabulary depends on the order of the text")
	}
	if ids := v.Encode("a€z"); !slices.Equal(ids, []int{v.ID('a'), UNK, v.ID('z')}) {
		t.Errorf("unknown rune: %v", ids)
	}
	if got := v.Decode([]int{v.ID('h'), UNK, -1, v.Size(), v.ID('i')}); got != "h\uFFFD\uFFFD\uFFFDi" {
		t.Errorf("Decode with UNK/out of range = %q", got)
	}
	u := NewVocab("ü€😀a")
	if r, err := VocabFromRunes(u.Runes()); err != nil || r.Decode(r.Encode("a😀ü")) != "a😀ü" {
		t.Errorf("rebuilt vocabulary: %v", err)
	}
	for _, bad := range [][]rune{{'b', 'a'}, {'a', 'a'}, {-1}, {0xD800}} {
		if _, err := VocabFromRunes(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("VocabFromRunes(%q): %v", bad, err)
		}
	}
}

func reverse(s string) string {
	r := []rune(s)
	slices.Reverse(r)
	return string(r)
}

func FuzzParsePlay(f *testing.F) {
	f.Add("\tA PLAY\n\n\tDRAMATIS PERSONAE\nKING\tof x\nACT I\nSCENE I\tA hall.\n\t[Enter KING]\nKING\tHello,\n\tfriend [aside] there.\n")
	f.Add("T\nA\t[Aside to B,\n\tC]  Quiet.\n\tEPILOGUE\nB\tx\n")
	f.Add(EmbeddedText()[3000:4200])
	f.Add("P\r\n\v\tx\r\nA\t[\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		p, err := ParsePlay("fuzz", strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %q is not ErrMalformed", err)
			}
			return
		}
		if len(p.Speeches) == 0 || p.Title == "" {
			t.Fatal("success without title or speeches")
		}
		for _, s := range p.Speeches {
			if s.Speaker == "" || s.Text == "" || strings.Contains(s.Text, "[") || !utf8.ValidString(s.Text) {
				t.Fatalf("bad speech %q", s)
			}
		}
		v := NewVocab(p.Text())
		if v.Decode(v.Encode(p.Text())) != p.Text() {
			t.Fatal("vocab round trip")
		}
		var b strings.Builder
		if err := WritePlay(&b, p); err != nil {
			t.Fatalf("WritePlay of a parsed play: %v", err)
		}
		back, err := ParsePlay("rewritten", strings.NewReader(b.String()))
		if err != nil || !reflect.DeepEqual(back, p) {
			t.Fatalf("written play parses back differently (%v):\n%q\n%+v\n%+v", err, b.String(), p, back)
		}
	})
}

// Shards of the play written with WritePlay parse back to the same speeches.
func TestWritePlayRoundTrip(t *testing.T) {
	p, err := EmbeddedPlay()
	if err != nil {
		t.Fatal(err)
	}
	for j, part := range Natural(p.Groups(), 3) {
		shard := p.Subset(part)
		var b strings.Builder
		if err := WritePlay(&b, shard); err != nil {
			t.Fatal(err)
		}
		back, err := ParsePlay("shard", strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("shard %d: %v", j, err)
		}
		if !reflect.DeepEqual(back, shard) {
			t.Errorf("shard %d: %d speeches written, %d read back differently", j, len(shard.Speeches), len(back.Speeches))
		}
	}
	for _, bad := range []*Play{
		{Title: "", Speeches: []Speech{{"A", "x"}}},
		{Title: "T", Speeches: []Speech{{"", "x"}}},
		{Title: "T", Speeches: []Speech{{"A\tB", "x"}}},
		{Title: "T", Speeches: []Speech{{"A", ""}}},
	} {
		if err := WritePlay(io.Discard, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("WritePlay(%+v): %v", bad, err)
		}
	}
}
