package compress

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them (test with errors.Is) and adds detail naming what was wrong.
var (
	// ErrSetting: a setting string or Setting value is invalid.
	ErrSetting = errors.New("compress: invalid setting")
	// ErrConfig: a Config field other than the Setting is invalid.
	ErrConfig = errors.New("compress: invalid config")
	// ErrNonFinite: Encode was given a NaN or ±Inf value (or a low-rank factor
	// overflowed float32). Nothing is encoded and no state changes.
	ErrNonFinite = errors.New("compress: non-finite value")
	// ErrLength: an input's length does not fit the Shape, or exceeds
	// Config.MaxElements.
	ErrLength = errors.New("compress: bad length")
	// ErrCorrupt: a message is malformed: truncated, trailing bytes, bad magic,
	// a length that disagrees with the element count, an index out of range
	// or not increasing, a NaN/Inf/negative scale, an invalid code.
	ErrCorrupt = errors.New("compress: corrupt message")
	// ErrChecksum: the CRC-32C of a message does not match. It also matches
	// ErrCorrupt.
	ErrChecksum = fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	// ErrVersion: a message has a wire-format version this package does not read.
	ErrVersion = errors.New("compress: unsupported format version")
	// ErrSettingMismatch: a message was coded with another setting than the
	// decoding Codec's (an unparseable setting wraps ErrSetting instead).
	ErrSettingMismatch = errors.New("compress: setting mismatch")
	// ErrShapeMismatch: a message was coded for another Shape than the
	// decoding Codec's (the Shape hashes differ).
	ErrShapeMismatch = errors.New("compress: shape mismatch")
)

func corruptf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}
