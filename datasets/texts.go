package datasets

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
	"unicode/utf8"
)

// MaxTextFiles caps the number of .txt files LoadTexts reads from a directory.
const MaxTextFiles = 4096

// Document is one text file of a contributor: its name (the file's base
// name) and its UTF-8 content.
type Document struct {
	Name string
	Text string
}

// LoadTexts reads name from fsys: a UTF-8 text file (one document), or a
// directory whose .txt files (sorted by name, not recursing) are one
// document each. Every file must be valid UTF-8 without NUL bytes
// (ErrMalformed, naming the file and the byte offset) and non-empty
// (ErrEmpty); a file above MaxTextBytes, all files together above
// MaxTextBytes, or more than MaxTextFiles files are ErrTooLarge; a directory
// without .txt files is ErrNotFound.
func LoadTexts(fsys fs.FS, name string) ([]Document, error) {
	st, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	if !st.IsDir() {
		d, err := loadDocument(fsys, name)
		if err != nil {
			return nil, err
		}
		return []Document{d}, nil
	}
	entries, err := fs.ReadDir(fsys, name) // sorted by file name
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	var docs []Document
	total := 0
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".txt") || !e.Type().IsRegular() {
			continue
		}
		if len(docs) == MaxTextFiles {
			return nil, fmt.Errorf("datasets: %s: %w: more than %d .txt files", name, ErrTooLarge, MaxTextFiles)
		}
		d, err := loadDocument(fsys, path.Join(name, e.Name()))
		if err != nil {
			return nil, err
		}
		if total += len(d.Text); total > MaxTextBytes {
			return nil, fmt.Errorf("datasets: %s: %w: .txt files hold more than %d bytes together", name, ErrTooLarge, MaxTextBytes)
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("datasets: %s: %w: no .txt files in the directory", name, ErrNotFound)
	}
	return docs, nil
}

func loadDocument(fsys fs.FS, name string) (Document, error) {
	text, err := LoadText(fsys, name)
	if err != nil {
		return Document{}, err
	}
	if text == "" {
		return Document{}, fmt.Errorf("datasets: %s: %w", name, ErrEmpty)
	}
	return Document{Name: path.Base(name), Text: text}, nil
}

// SplitText cuts b into a training part, the first frac of its bytes, and a
// validation part, the rest: nanoGPT's split with frac = 0.9. The cut moves
// back to the start of the rune it falls in, so both parts stay valid UTF-8
// when b is. frac outside [0, 1] (or NaN) is ErrInvalidArgument. The parts
// alias b.
func SplitText(b []byte, frac float64) (train, val []byte, err error) {
	if !(frac >= 0 && frac <= 1) {
		return nil, nil, fmt.Errorf("%w: SplitText: fraction %v outside [0,1]", ErrInvalidArgument, frac)
	}
	cut := int(frac * float64(len(b)))
	cut = min(max(cut, 0), len(b))
	for cut > 0 && cut < len(b) && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return b[:cut:cut], b[cut:], nil
}

// SplitLines splits s after each "\n"; the last line may lack one. Joining
// the result gives s back. An empty s has no lines.
func SplitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// ParseSpeakerText parses speaker-tagged text in Tiny Shakespeare's layout:
// a line "NAME:" (a non-empty name of at most 64 bytes, no TAB, nothing
// after the colon) starts a speech by NAME, the lines after it up to the
// next blank line are its text (joined with "\n"), and blank lines separate
// speeches. Lines outside any speech are ignored. The play's Title is name.
// The input must satisfy LoadText's rules (ErrMalformed, ErrTooLarge); a
// text with no speech is ErrMalformed. WriteSpeakerText gives the speeches
// back in the same layout.
func ParseSpeakerText(name string, text string) (*Play, error) {
	if len(text) > MaxTextBytes {
		return nil, fmt.Errorf("datasets: %s: %w: more than %d bytes", name, ErrTooLarge, MaxTextBytes)
	}
	if _, err := readText(name, strings.NewReader(text)); err != nil {
		return nil, err
	}
	p := &Play{Title: name}
	var cur *Speech
	var lines []string
	flush := func() {
		if cur != nil && len(lines) > 0 {
			cur.Text = strings.Join(lines, "\n")
			p.Speeches = append(p.Speeches, *cur)
		}
		cur, lines = nil, lines[:0]
	}
	for _, line := range SplitLines(text) {
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if cur == nil {
			if sp, ok := speakerLine(line); ok {
				cur = &Speech{Speaker: sp}
			}
			continue
		}
		lines = append(lines, line)
	}
	flush()
	if len(p.Speeches) == 0 {
		return nil, fmt.Errorf("datasets: %s: %w: no speeches (want \"NAME:\" lines)", name, ErrMalformed)
	}
	return p, nil
}

// speakerLine reports whether line is "NAME:" and returns NAME.
func speakerLine(line string) (string, bool) {
	sp, ok := strings.CutSuffix(line, ":")
	if !ok || sp == "" || len(sp) > 64 || strings.ContainsAny(sp, "\t:") || strings.TrimSpace(sp) != sp {
		return "", false
	}
	return sp, true
}

// WriteSpeakerText returns speeches in the layout ParseSpeakerText reads:
// "NAME:\n", the text, "\n\n" between speeches. Speech text must not hold
// blank lines (ParseSpeakerText never produces one).
func WriteSpeakerText(speeches []Speech) string {
	var b strings.Builder
	for i, s := range speeches {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(s.Speaker)
		b.WriteString(":\n")
		b.WriteString(s.Text)
		b.WriteString("\n")
	}
	return b.String()
}

// isSpeakerText reports whether text looks like ParseSpeakerText's layout:
// its first non-blank line is "NAME:".
func isSpeakerText(text string) bool {
	for _, line := range SplitLines(text) {
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		_, ok := speakerLine(line)
		return ok
	}
	return false
}

// ParseSpeeches parses a document as speaker-tagged text: Tiny Shakespeare's
// "NAME:" layout (ParseSpeakerText) when its first non-blank line is
// "NAME:", else the embedded play's layout (ParsePlay).
func ParseSpeeches(d Document) (*Play, error) {
	if isSpeakerText(d.Text) {
		return ParseSpeakerText(d.Name, d.Text)
	}
	p, err := ParsePlay(d.Name, strings.NewReader(d.Text))
	if err != nil {
		return nil, err
	}
	return p, nil
}
