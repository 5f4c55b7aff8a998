package datasets

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxTextBytes caps the size of a text file LoadText and ParsePlay accept.
const MaxTextBytes = 64 << 20

// Speech is one uninterrupted turn of a speaker. Text holds the spoken lines
// joined with "\n", without stage directions.
type Speech struct {
	Speaker string
	Text    string
}

// Play is a parsed play: its title and its speeches in order.
type Play struct {
	Title    string
	Speeches []Speech
}

// Speakers returns the distinct speaker names, sorted.
func (p *Play) Speakers() []string {
	var out []string
	for _, s := range p.Speeches {
		out = append(out, s.Speaker)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Groups returns the speaker of each speech, by speech index: the input of
// Natural to split a play by speaker.
func (p *Play) Groups() []string {
	out := make([]string, len(p.Speeches))
	for i, s := range p.Speeches {
		out[i] = s.Speaker
	}
	return out
}

// Text returns the text of all speeches, each followed by "\n".
func (p *Play) Text() string {
	var b strings.Builder
	for _, s := range p.Speeches {
		b.WriteString(s.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// Subset returns a play with the same title and the speeches in idx, in that
// order: a peer's shard. It panics if an index is out of range.
func (p *Play) Subset(idx []int) *Play {
	out := &Play{Title: p.Title, Speeches: make([]Speech, len(idx))}
	for k, i := range idx {
		if i < 0 || i >= len(p.Speeches) {
			panic(fmt.Sprintf("datasets: speech index %d out of range [0,%d)", i, len(p.Speeches)))
		}
		out.Speeches[k] = p.Speeches[i]
	}
	return out
}

// WritePlay writes p in the layout ParsePlay reads: "\tTITLE", then each
// speech as "SPEAKER\tfirst line" and "\tnext line"s, separated by blank
// lines. ParsePlay gives p back for any play it produced itself.
func WritePlay(w io.Writer, p *Play) error {
	if p.Title == "" || strings.Contains(p.Title, "\n") {
		return fmt.Errorf("%w: WritePlay: title %q", ErrInvalidArgument, p.Title)
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "\t%s\n", p.Title)
	for i, s := range p.Speeches {
		if s.Speaker == "" || strings.ContainsAny(s.Speaker, "\t\n") || s.Text == "" {
			return fmt.Errorf("%w: WritePlay: speech %d has speaker %q and %d bytes of text", ErrInvalidArgument, i, s.Speaker, len(s.Text))
		}
		bw.WriteString("\n")
		lines := strings.Split(s.Text, "\n")
		bw.WriteString(s.Speaker)
		if normSpace(s.Speaker+" "+lines[0]) == normSpace(p.Title) {
			// "SPEAKER<TAB>line" would read as the title heading: start
			// the speech with an empty line instead.
			bw.WriteString("\t\n")
		}
		for _, line := range lines {
			bw.WriteString("\t")
			bw.WriteString(line)
			bw.WriteString("\n")
		}
	}
	return bw.Flush()
}

// ParsePlay parses a play in the layout of the Canterbury corpus's
// Shakespeare files (asyoulik.txt); name is used in error messages only.
//
// Layout, line by line:
//   - the first non-blank line is the title (runs of white space collapsed
//     to one space); later lines equal to it are page headings and skipped;
//   - "DRAMATIS PERSONAE" starts the cast list, skipped up to the first act
//     heading;
//   - headings start a new section and are skipped: "ACT I", "SCENE II<TAB>
//     place", "PROLOGUE", "EPILOGUE", "INDUCTION" (at the line start or
//     after a TAB);
//   - "NAME<TAB>text" starts a speech by NAME; a line starting with TAB or
//     space continues the current speech (blank lines do not end it);
//   - text in [brackets] is a stage direction and removed (with the spaces
//     after it), also across lines, before a line is classified; a line
//     left empty adds nothing;
//   - lines before the first speech of a section that are not speeches (a
//     scene's place, say) are skipped.
//
// Speeches with no text left are dropped. The input must be valid UTF-8
// without NUL bytes and at most MaxTextBytes; otherwise the error wraps
// ErrMalformed or ErrTooLarge and names the file. A text with no speech is
// ErrMalformed.
func ParsePlay(name string, r io.Reader) (*Play, error) {
	b, err := readText(name, r)
	if err != nil {
		return nil, err
	}
	p := &Play{}
	var (
		cur        *Speech
		lines      []string
		inPersonae bool
		inBracket  bool
	)
	flush := func() {
		if cur != nil {
			if text := strings.Join(lines, "\n"); text != "" {
				cur.Text = text
				p.Speeches = append(p.Speeches, *cur)
			}
		}
		cur, lines = nil, lines[:0]
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, len(b)+1)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if inBracket {
			// Inside a stage direction spanning lines; text after "]" continues.
			i := strings.IndexByte(line, ']')
			if i < 0 {
				continue
			}
			line = "\t" + line[i+1:]
		}
		indented := line != "" && (line[0] == '\t' || line[0] == ' ')
		line, inBracket = stripDirections(line)
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			continue
		}
		if p.Title == "" {
			p.Title = normSpace(trimmed)
			continue
		}
		if normSpace(trimmed) == p.Title {
			flush()
			continue
		}
		if trimmed == "DRAMATIS PERSONAE" {
			flush()
			inPersonae = true
			continue
		}
		first, _, _ := strings.Cut(trimmed, "\t")
		if kind := heading(strings.TrimSpace(first)); kind != 0 {
			flush()
			if kind == actHeading {
				inPersonae = false
			}
			continue
		}
		if inPersonae {
			continue
		}
		speaker, rest, hasTab := strings.Cut(line, "\t")
		speaker = strings.TrimSpace(speaker)
		if indented || (hasTab && speaker == "") {
			if cur != nil {
				lines = append(lines, trimmed)
			}
			continue
		}
		flush()
		if !hasTab {
			// A line at the margin without a TAB is neither speech nor
			// continuation: treat it as an unknown heading.
			continue
		}
		cur = &Speech{Speaker: speaker}
		if text := strings.TrimSpace(rest); text != "" {
			lines = append(lines, text)
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("datasets: %s: %w", name, err)
	}
	if len(p.Speeches) == 0 {
		return nil, fmt.Errorf("datasets: %s: %w: no speeches (want lines \"SPEAKER<TAB>text\")", name, ErrMalformed)
	}
	return p, nil
}

const (
	actHeading   = 1 // ends the dramatis personae
	sceneHeading = 2
)

// heading classifies the first TAB-separated field of a line.
func heading(s string) int {
	switch s {
	case "PROLOGUE", "EPILOGUE", "INDUCTION":
		return actHeading
	}
	if num, ok := strings.CutPrefix(s, "ACT "); ok && isRoman(num) {
		return actHeading
	}
	if num, ok := strings.CutPrefix(s, "SCENE "); ok && isRoman(num) {
		return sceneHeading
	}
	return 0
}

func isRoman(s string) bool {
	return s != "" && strings.Trim(s, "IVXLC") == ""
}

// stripDirections removes "[...]" segments from s, with the spaces that
// follow a segment, and reports whether an unclosed "[" continues on later
// lines (the rest of s is then removed too). Other characters, TABs
// included, are kept.
func stripDirections(s string) (string, bool) {
	if !strings.Contains(s, "[") {
		return s, false
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '[')
		if i < 0 {
			b.WriteString(s)
			return b.String(), false
		}
		b.WriteString(s[:i])
		j := strings.IndexByte(s[i:], ']')
		if j < 0 {
			return b.String(), true
		}
		s = strings.TrimLeft(s[i+j+1:], " ")
	}
}

// normSpace collapses runs of white space to one space.
func normSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

// LoadText reads name from fsys as UTF-8 text. It fails, naming the file and
// the byte offset, if the file is not valid UTF-8 or holds a NUL byte
// (ErrMalformed), or is larger than MaxTextBytes (ErrTooLarge).
func LoadText(fsys fs.FS, name string) (string, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return "", fmt.Errorf("datasets: %w", err)
	}
	defer f.Close()
	b, err := readText(name, f)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// EmbeddedPlay returns Shakespeare's As You Like It (public domain; the
// Canterbury corpus file asyoulik.txt), parsed: 27 speakers and 811
// speeches (ROSALIND has 201).
func EmbeddedPlay() (*Play, error) {
	b, err := embedded.ReadFile("data/asyoulik.txt")
	if err != nil {
		return nil, fmt.Errorf("datasets: embedded play: %w", err)
	}
	return ParsePlay("asyoulik.txt", bytes.NewReader(b))
}

// EmbeddedText returns the raw text of As You Like It.
func EmbeddedText() string {
	b, _ := embedded.ReadFile("data/asyoulik.txt")
	return string(b)
}

func readText(name string, r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxTextBytes+1))
	if err != nil {
		return nil, fmt.Errorf("datasets: %s: %w", name, err)
	}
	if len(b) > MaxTextBytes {
		return nil, fmt.Errorf("datasets: %s: %w: more than %d bytes", name, ErrTooLarge, MaxTextBytes)
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return nil, fmt.Errorf("datasets: %s: %w: NUL byte at offset %d (binary file?)", name, ErrMalformed, i)
	}
	if !utf8.Valid(b) {
		off := 0
		for off < len(b) {
			r, size := utf8.DecodeRune(b[off:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			off += size
		}
		return nil, fmt.Errorf("datasets: %s: %w: invalid UTF-8 at byte offset %d", name, ErrMalformed, off)
	}
	return b, nil
}

// UNK is the token id Vocab.Encode gives to characters not in the
// vocabulary; Decode turns it (and any id out of range) into U+FFFD.
const UNK = 0

// Vocab is a character vocabulary: id 0 is UNK, ids 1..Size()-1 are the
// distinct runes of the text it was built from, in increasing code point
// order, so the same text always gives the same ids.
type Vocab struct {
	runes []rune
	ascii [128]int32
	index map[rune]int
}

// NewVocab returns the vocabulary of the runes in text (invalid UTF-8
// sequences contribute U+FFFD).
func NewVocab(text string) *Vocab {
	seen := map[rune]bool{}
	for _, r := range text {
		seen[r] = true
	}
	rs := make([]rune, 0, len(seen))
	for r := range seen {
		rs = append(rs, r)
	}
	slices.Sort(rs)
	v, _ := VocabFromRunes(rs) // sorted and distinct by construction
	return v
}

// VocabFromRunes rebuilds a vocabulary from Runes(): runes must be strictly
// increasing valid code points.
func VocabFromRunes(runes []rune) (*Vocab, error) {
	v := &Vocab{runes: slices.Clone(runes), index: make(map[rune]int, len(runes))}
	for i, r := range runes {
		if !utf8.ValidRune(r) {
			return nil, fmt.Errorf("%w: vocabulary rune %d (%U) is not a valid code point", ErrInvalidArgument, i, r)
		}
		if i > 0 && r <= runes[i-1] {
			return nil, fmt.Errorf("%w: vocabulary runes not strictly increasing at %d (%U after %U)", ErrInvalidArgument, i, r, runes[i-1])
		}
		v.index[r] = i + 1
		if r < 128 {
			v.ascii[r] = int32(i + 1)
		}
	}
	return v, nil
}

// Size returns the number of ids, including UNK.
func (v *Vocab) Size() int { return len(v.runes) + 1 }

// Runes returns the vocabulary's runes; id i+1 is Runes()[i].
func (v *Vocab) Runes() []rune { return slices.Clone(v.runes) }

// ID returns the id of r, or UNK.
func (v *Vocab) ID(r rune) int {
	if r >= 0 && r < 128 {
		return int(v.ascii[r])
	}
	return v.index[r] // 0 (UNK) when absent
}

// Encode returns the ids of the runes of s; unknown runes map to UNK.
func (v *Vocab) Encode(s string) []int {
	return v.AppendEncode(make([]int, 0, len(s)), s)
}

// AppendEncode appends the ids of the runes of s to dst.
func (v *Vocab) AppendEncode(dst []int, s string) []int {
	for _, r := range s {
		dst = append(dst, v.ID(r))
	}
	return dst
}

// Decode returns the text of ids; UNK and ids out of range become U+FFFD.
func (v *Vocab) Decode(ids []int) string {
	var b strings.Builder
	b.Grow(len(ids))
	for _, id := range ids {
		if id >= 1 && id <= len(v.runes) {
			b.WriteRune(v.runes[id-1])
		} else {
			b.WriteRune(utf8.RuneError)
		}
	}
	return b.String()
}
