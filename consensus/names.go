package consensus

import "unicode/utf8"

// formatRanges are the code points refused in names besides the C0 and C1 controls: Unicode's
// format characters (category Cf, as of Unicode 15.0: soft hyphen, zero-width and joiner
// characters, bidi embeddings, overrides and isolates, the byte-order mark, tags, ...) and the
// line and paragraph separators. The table is written out rather than taken from package
// unicode: replicas built with different Go versions (different Unicode tables) must refuse
// exactly the same names, or their states would diverge.
var formatRanges = [...][2]rune{
	{0x00AD, 0x00AD}, {0x0600, 0x0605}, {0x061C, 0x061C}, {0x06DD, 0x06DD}, {0x070F, 0x070F},
	{0x0890, 0x0891}, {0x08E2, 0x08E2}, {0x180E, 0x180E}, {0x200B, 0x200F}, {0x2028, 0x2029},
	{0x202A, 0x202E}, {0x2060, 0x2064}, {0x2066, 0x206F}, {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB},
	{0x110BD, 0x110BD}, {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3},
	{0x1D173, 0x1D17A}, {0xE0001, 0xE0001}, {0xE0020, 0xE007F},
}

// unprintable reports whether r may not appear in a name: a C0 or C1 control (terminal escape
// sequences start with one), DEL, or a format/separator character (formatRanges).
func unprintable(r rune) bool {
	if r < 0x20 || (r >= 0x7F && r <= 0x9F) {
		return true
	}
	for _, fr := range formatRanges {
		if r >= fr[0] && r <= fr[1] {
			return true
		}
	}
	return false
}

// checkPrintable validates a name people read (member, contributor, proposal, coordinator):
// non-empty when required, at most MaxShortNameLen bytes, valid UTF-8, and without controls or
// format characters, so that it cannot rewrite a terminal, reorder text or pose as another name.
func checkPrintable(field, v string, required bool) error {
	if required && v == "" {
		return errf(ErrInvalid, "%s is empty", field)
	}
	if len(v) > MaxShortNameLen {
		return errf(ErrInvalid, "%s is %d bytes, limit %d", field, len(v), MaxShortNameLen)
	}
	if !utf8.ValidString(v) {
		return errf(ErrInvalid, "%s %q is not valid UTF-8", field, v)
	}
	for i, r := range v {
		if unprintable(r) {
			return errf(ErrInvalid, "%s %q has unprintable character %U at byte %d", field, v, r, i)
		}
	}
	return nil
}

// ContributorKey is how the ledger names a contributor: the ID of the member that speaks for it,
// a slash and the name that member registered it under. Contributor names are the member's own:
// two members may both have a contributor "carol", and nobody can take a name from another
// member. Cohort records (ContributorData.Name, DuplicateOf), ScoreCommit weights, influence,
// flags, balances and payouts all use keys; show ContributorName(key) to people.
func ContributorKey(member, name string) string { return member + "/" + name }

// SplitContributorKey splits a ContributorKey into the member ID and the contributor's name; ok
// is false when key is not one (no slash).
func SplitContributorKey(key string) (member, name string, ok bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", key, false
}

// ContributorName is the name part of a ContributorKey (key itself when it is not one).
func ContributorName(key string) string {
	_, n, _ := SplitContributorKey(key)
	return n
}
