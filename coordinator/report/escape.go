package report

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s safe to print on a terminal: what a terminal would act on is shown instead —
// C0 controls and DEL as \xNN (ESC as \x1b, TAB as \x09), C1 controls, Unicode format characters
// (bidi overrides and isolates such as U+202E, zero-width joiners, the BOM) and line and paragraph
// separators as \uXXXX, a byte that is not UTF-8 as \xNN, and the backslash itself as \\ so that
// no escape can be forged. Names come from strangers: every name a table or text report prints
// goes through Escape. Other text is unchanged.
func Escape(s string) string {
	return escape(s, func(r rune) bool { return r == '\\' || unsafeRune(r) }, true)
}

// unsafeRune reports a rune a terminal may act on, or that reorders or hides text.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r)
}

// escape writes the runes quote selects (and bytes that are not UTF-8) in Go escape notation.
func escape(s string, quote func(rune) bool, backslash bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || quote(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\' && backslash:
			b.WriteString(`\\`)
		case !quote(r):
			b.WriteString(s[i : i+n])
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}

// CSVText returns a text cell (a name, a flag, a note) safe for a spreadsheet and a terminal: a
// cell starting with = + - @ TAB or CR gets a leading ' so that no spreadsheet reads it as a
// formula (the OWASP rule), and control and format characters other than TAB, CR and LF (which
// the CSV writer quotes) are shown as with Escape. Numbers are written as they are.
func CSVText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		s = "'" + s
	}
	return escape(s, func(r rune) bool { return r != '\t' && r != '\r' && r != '\n' && unsafeRune(r) }, false)
}
