package client

import (
	"context"
	"errors"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/wirecode"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// TestWireCodesAreDistinct: every sentinel a reply can carry has its own non-zero code, in its
// package's range, so that a client never mistakes one verdict for another.
func TestWireCodesAreDistinct(t *testing.T) {
	ranges := []struct {
		lo, hi uint16
		errs   []error
	}{
		{1, 63, []error{transport.ErrBusy, transport.ErrTooSlow, transport.ErrUnknownType, transport.ErrNotFound, transport.ErrPayloadTooLarge, transport.ErrConnLimit}},
		{64, 127, []error{consensus.ErrDecode, consensus.ErrVersion, consensus.ErrInvalid, consensus.ErrUnsigned, consensus.ErrBadSignature,
			consensus.ErrUnknownIssuer, consensus.ErrForbidden, consensus.ErrStaleRequest, consensus.ErrExists, consensus.ErrNotFound,
			consensus.ErrWrongStatus, consensus.ErrDeadline, consensus.ErrLimit, consensus.ErrOverflow, consensus.ErrSnapshot,
			consensus.ErrNotLeader, consensus.ErrShutdown, consensus.ErrConfig}},
		{128, 191, []error{protocol.ErrUnavailable, protocol.ErrDuplicate, protocol.ErrNotAggregator, protocol.ErrLate, protocol.ErrForbidden, protocol.ErrMalformed,
			protocol.ErrNotReady, protocol.ErrTooLarge}},
	}
	seen := map[uint16]error{}
	for _, r := range ranges {
		for _, e := range r.errs {
			c := wirecode.Of(e)
			if c < r.lo || c > r.hi {
				t.Errorf("%v has code %d, outside its package's range %d–%d", e, c, r.lo, r.hi)
			}
			if prev, dup := seen[c]; dup {
				t.Errorf("%v and %v share code %d", e, prev, c)
			}
			seen[c] = e
			// Matching is by code: a reply rebuilt from the code and any text matches its sentinel only.
			back := (&transport.RemoteError{Code: c, Msg: "x"}).Reason()
			for _, other := range seen {
				if errors.Is(back, other) != (other == e) {
					t.Errorf("code %d rebuilt: errors.Is(…, %v) = %v", c, other, !(other == e))
				}
			}
		}
	}
	if wirecode.Of(&consensus.NotLeaderError{}) != wirecode.Of(consensus.ErrNotLeader) {
		t.Error("a NotLeaderError does not carry ErrNotLeader's code")
	}
}

// TestRetryable: no answer and "not now" are worth another try; a verdict is final, whether it
// comes as the transport's RemoteError or as the Reason the client hands its caller.
func TestRetryable(t *testing.T) {
	remote := func(e error) *transport.RemoteError {
		return &transport.RemoteError{Type: protocol.MsgSubmit, Code: wirecode.Of(e), Msg: e.Error()}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errors.New("dial: connection refused"), true},
		{context.DeadlineExceeded, true},
		{remote(protocol.ErrUnavailable), true},
		{remote(protocol.ErrUnavailable).Reason(), true},
		{remote(transport.ErrBusy), true},
		{remote(consensus.ErrUnsigned), false},
		{remote(consensus.ErrUnsigned).Reason(), false},
		{remote(consensus.ErrDeadline).Reason(), false},
		{&transport.RemoteError{Msg: "unavailable: looks retryable, has no code"}, false},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
