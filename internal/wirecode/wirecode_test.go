package wirecode

import (
	"errors"
	"fmt"
	"testing"
)

func TestCodesCrossTheWire(t *testing.T) {
	errLate := New(131, "late")
	errDup := New(129, "already sent")
	server := fmt.Errorf("upload: slice 2 closed at its deadline: %w", errLate)
	code := Of(server)
	if code != 131 {
		t.Fatalf("Of = %d, want 131", code)
	}
	// The caller sees only the code and the text.
	remote := New(code, server.Error())
	if !errors.Is(remote, errLate) {
		t.Error("the rebuilt error does not match its sentinel")
	}
	if errors.Is(remote, errDup) {
		t.Error("the rebuilt error matches another code's sentinel")
	}
	if remote.Error() != "upload: slice 2 closed at its deadline: late" {
		t.Errorf("text %q", remote)
	}
	if Of(errors.New("plain")) != 0 || Of(nil) != 0 {
		t.Error("an error without a code has one")
	}
	// Code 0 matches only itself.
	a, b := New(0, "a"), New(0, "a")
	if errors.Is(a, b) || !errors.Is(a, a) {
		t.Error("code-0 errors match by code")
	}
	// Two wraps: the outermost code wins.
	both := fmt.Errorf("%w: %w", errDup, errLate)
	if Of(both) != 129 {
		t.Errorf("Of(both) = %d, want the first code 129", Of(both))
	}
}
