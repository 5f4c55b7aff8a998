package datasets

import (
	"crypto/sha256"
	"strings"
	"unicode"
)

// ShingleWords is the number of words in a text shingle.
const ShingleWords = 8

// NormalizeText returns text lower-cased with every run of white space and
// punctuation collapsed to one space and no leading or trailing space, so
// that re-wrapped or re-punctuated copies normalise alike.
func NormalizeText(text string) string {
	return strings.Join(textWords(text), " ")
}

func textWords(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '\''
	})
}

// ShingleHashes returns the hashes of the text's shingles: SHA-256 of each
// run of ShingleWords consecutive normalised words (see NormalizeText)
// joined by one space, sliding one word at a time; a text of fewer words
// gives one shingle of all of them, an empty one none. A text copied into
// another shares all its shingles with it; two texts sharing a passage share
// the passage's shingles.
func ShingleHashes(text string) []Hash {
	w := textWords(text)
	if len(w) == 0 {
		return nil
	}
	n := max(len(w)-ShingleWords+1, 1)
	out := make([]Hash, n)
	for i := range out {
		out[i] = sha256.Sum256([]byte(strings.Join(w[i:min(i+ShingleWords, len(w))], " ")))
	}
	return out
}

// TextFingerprint returns the fingerprint of a text shard (its documents
// concatenated in any order): the Fingerprint of its shingle hashes, so
// Overlap estimates the Jaccard similarity of two shards' shingle sets — about
// 1 for a copy, 1/3 when each shares half its text with the other, about 0
// for unrelated text. The sketch's hash family is fixed (Sketch), so the
// result is deterministic.
func TextFingerprint(docs []Document) Fingerprint {
	var hs []Hash
	for _, d := range docs {
		hs = append(hs, ShingleHashes(d.Text)...)
	}
	return NewFingerprint(hs)
}
