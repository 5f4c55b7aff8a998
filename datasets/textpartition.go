package datasets

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// TextPartitionKind names a text partitioner.
type TextPartitionKind uint8

// Text partition kinds. The zero value is TextIID.
const (
	// TextIID deals lines (or, with Chunk > 0, chunks of Chunk bytes) to
	// parts by a seeded permutation; part sizes in units differ by at most one.
	TextIID TextPartitionKind = iota
	// TextContiguous cuts the text (the documents in order) into k
	// consecutive runs of lines of about equal bytes.
	TextContiguous
	// TextSpeaker gives each speaker's speeches whole to one part (Natural
	// over the speakers; the same name in two documents is one speaker).
	TextSpeaker
	// TextPlay gives each document (a play) whole to one part (Natural over
	// the documents, balanced by speeches).
	TextPlay
)

// TextPartition is a parsed text partition spec. The zero value is "iid"
// (by lines).
type TextPartition struct {
	Kind TextPartitionKind
	// Chunk is TextIID's unit in bytes, cut back to a rune boundary; 0 means
	// lines.
	Chunk int
}

// MaxTextChunk bounds TextPartition.Chunk.
const MaxTextChunk = 1 << 20

// ParseTextPartition parses "iid", "iid:CHUNK" (CHUNK bytes, 1..MaxTextChunk),
// "contiguous", "speaker" or "play". Errors wrap ErrInvalidArgument.
func ParseTextPartition(spec string) (TextPartition, error) {
	name, arg, hasArg := strings.Cut(strings.TrimSpace(spec), ":")
	var p TextPartition
	switch name {
	case "iid":
		if hasArg {
			n, err := strconv.Atoi(arg)
			if err != nil {
				return TextPartition{}, fmt.Errorf("%w: text partition %q: chunk %q is not an integer", ErrInvalidArgument, spec, arg)
			}
			p.Chunk = n
			if err := p.Validate(); err != nil || n == 0 {
				return TextPartition{}, fmt.Errorf("%w: text partition %q: chunk must be in [1,%d]", ErrInvalidArgument, spec, MaxTextChunk)
			}
			return p, nil
		}
	case "contiguous":
		p.Kind = TextContiguous
	case "speaker":
		p.Kind = TextSpeaker
	case "play":
		p.Kind = TextPlay
	default:
		return TextPartition{}, fmt.Errorf("%w: text partition %q: unknown kind (want iid, iid:CHUNK, contiguous, speaker or play)", ErrInvalidArgument, spec)
	}
	if hasArg {
		return TextPartition{}, fmt.Errorf("%w: text partition %q: %s takes no argument", ErrInvalidArgument, spec, name)
	}
	return p, nil
}

// String returns the spec ParseTextPartition accepts.
func (p TextPartition) String() string {
	switch p.Kind {
	case TextIID:
		if p.Chunk > 0 {
			return "iid:" + strconv.Itoa(p.Chunk)
		}
		return "iid"
	case TextContiguous:
		return "contiguous"
	case TextSpeaker:
		return "speaker"
	case TextPlay:
		return "play"
	}
	return fmt.Sprintf("TextPartitionKind(%d)", p.Kind)
}

// Validate reports whether p is a known kind with valid parameters.
func (p TextPartition) Validate() error {
	if p.Kind > TextPlay {
		return fmt.Errorf("%w: unknown text partition kind %d", ErrInvalidArgument, p.Kind)
	}
	if p.Chunk < 0 || p.Chunk > MaxTextChunk || (p.Chunk != 0 && p.Kind != TextIID) {
		return fmt.Errorf("%w: text partition %s: chunk %d", ErrInvalidArgument, p, p.Chunk)
	}
	return nil
}

// textUnit is a piece of a document that goes whole to one part.
type textUnit struct {
	doc   int
	text  string
	group string
	sp    Speech
}

// Split partitions docs into k parts, seeded by seed (only TextIID uses it).
// Part j lists, for each document that contributes to it, a Document of the
// same name holding its units in their original order: for iid and
// contiguous the lines (or chunks) verbatim, so concatenating every part's
// pieces of a document in unit order gives the document back; for speaker
// and play the speeches, written with WriteSpeakerText. Documents are parsed
// with ParseSpeeches for speaker and play. Errors (ErrInvalidArgument): k < 1,
// fewer units than parts, fewer speakers or plays than parts, an empty part;
// parse errors are returned as they are.
func (p TextPartition) Split(docs []Document, k int, seed uint64) ([][]Document, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if k < 1 {
		return nil, fmt.Errorf("%w: %s: %d parts", ErrInvalidArgument, p, k)
	}
	var units []textUnit
	speech := p.Kind == TextSpeaker || p.Kind == TextPlay
	for i, d := range docs {
		switch {
		case speech:
			play, err := ParseSpeeches(d)
			if err != nil {
				return nil, err
			}
			for _, s := range play.Speeches {
				g := s.Speaker
				if p.Kind == TextPlay {
					g = strconv.Itoa(i) // documents may share a name
				}
				units = append(units, textUnit{doc: i, group: g, sp: s})
			}
		case p.Chunk > 0:
			for _, c := range chunks(d.Text, p.Chunk) {
				units = append(units, textUnit{doc: i, text: c})
			}
		default:
			for _, l := range SplitLines(d.Text) {
				units = append(units, textUnit{doc: i, text: l})
			}
		}
	}
	if len(units) < k {
		return nil, fmt.Errorf("%w: %s: cannot split %d units into %d non-empty parts", ErrInvalidArgument, p, len(units), k)
	}
	var parts [][]int
	switch p.Kind {
	case TextIID:
		parts = IID(len(units), k, seed)
	case TextContiguous:
		parts = contiguous(units, k)
	default:
		groups := make([]string, len(units))
		for i, u := range units {
			groups[i] = u.group
		}
		parts = Natural(groups, k)
	}
	out := make([][]Document, k)
	for j, idx := range parts {
		if len(idx) == 0 {
			return nil, fmt.Errorf("%w: %s: part %d of %d is empty (too few speakers, plays or lines)", ErrInvalidArgument, p, j, k)
		}
		// idx is ascending, so units come grouped by document, in order.
		var b strings.Builder
		var sp []Speech
		doc := units[idx[0]].doc
		emit := func() {
			text := b.String()
			if speech {
				text = WriteSpeakerText(sp)
			}
			out[j] = append(out[j], Document{Name: docs[doc].Name, Text: text})
			b.Reset()
			sp = sp[:0]
		}
		for _, i := range idx {
			u := units[i]
			if u.doc != doc {
				emit()
				doc = u.doc
			}
			b.WriteString(u.text)
			sp = append(sp, u.sp)
		}
		emit()
	}
	return out, nil
}

// contiguous cuts units into k consecutive runs: run j ends at the first unit
// boundary at or past (j+1)/k of the bytes, but leaves at least one unit for
// each later run.
func contiguous(units []textUnit, k int) [][]int {
	total := 0
	for _, u := range units {
		total += len(u.text)
	}
	parts := make([][]int, k)
	i, acc := 0, 0
	for j := range parts {
		target := int(int64(total) * int64(j+1) / int64(k))
		for i < len(units) && (len(parts[j]) == 0 || acc < target || j == k-1) && len(units)-i > k-1-j {
			acc += len(units[i].text)
			parts[j] = append(parts[j], i)
			i++
		}
	}
	return parts
}

// chunks cuts s into pieces of size bytes, each cut moved back to a rune
// boundary (a piece holds at least one rune).
func chunks(s string, size int) []string {
	var out []string
	for len(s) > 0 {
		n := min(size, len(s))
		for n < len(s) && n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		if n == 0 {
			_, n = utf8.DecodeRuneInString(s)
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}
