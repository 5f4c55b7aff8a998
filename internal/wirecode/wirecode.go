// Package wirecode gives sentinel errors a code that crosses the wire, so that a caller can match
// a remote node's error with errors.Is instead of reading its text.
//
// A package declares its sentinels with New, each with a code of its own range:
//
//	transport   1–63
//	consensus   64–127
//	protocol    128–191
//	coordinator 192–255
//
// A server puts Of(err) beside the error's text in its reply (transport.Header.Code); the caller
// rebuilds an error with New(code, text), which errors.Is matches against every error value of
// the same code — the sentinel it started from, on the other side of the wire.
//
//	var ErrLate = wirecode.New(131, "late")
//	...
//	return fmt.Errorf("upload: slice %d closed at its deadline: %w", i, ErrLate) // server
//	...
//	if errors.Is(err, protocol.ErrLate) { ... }                                  // caller
package wirecode

import "errors"

// Error is an error value with a wire code.
type Error struct {
	code uint16
	text string
}

// New returns an error with the given code and text. Code 0 means none: such an error matches
// only itself.
func New(code uint16, text string) *Error { return &Error{code: code, text: text} }

func (e *Error) Error() string { return e.text }

// WireCode is e's code.
func (e *Error) WireCode() uint16 { return e.code }

// Is reports whether target carries e's (non-zero) code: an error rebuilt from a reply matches
// the sentinel the remote side wrapped.
func (e *Error) Is(target error) bool {
	return e.code != 0 && Of(target) == e.code
}

// coded is any error that carries a wire code (Error, transport.RemoteError, consensus's
// NotLeaderError).
type coded interface{ WireCode() uint16 }

// Of returns the code of the first error in err's tree that carries one (depth first, as
// errors.As looks), or 0.
func Of(err error) uint16 {
	var c coded
	if errors.As(err, &c) {
		return c.WireCode()
	}
	return 0
}
