package protocol

import "github.com/cohortlab/cohort/internal/wirecode"

// Errors of the data plane and the client API. A coordinator wraps one of these (with %w) in the
// error it answers with; the reply carries its wire code (128–191), and the caller matches it with
// errors.Is on what the transport or the client returns — never by reading the text.
var (
	// ErrUnavailable: not now or not here — no leader yet, a node that cannot forward, a rate
	// limit, an aggregate not ready, a validator still loading. Try again later or at another
	// coordinator. Its text starts every such message: "unavailable: ...".
	ErrUnavailable error = wirecode.New(128, "unavailable")
	// ErrDuplicate: the aggregator already holds this member's update for the slice (a resend):
	// it counts once.
	ErrDuplicate error = wirecode.New(129, "already sent")
	// ErrNotAggregator: this node does not aggregate the slice (the round moved it, or never gave
	// it here): ask the round who does.
	ErrNotAggregator error = wirecode.New(130, "not this node's slice")
	// ErrLate: the slice closed at its deadline before the upload arrived.
	ErrLate error = wirecode.New(131, "late")
	// ErrForbidden: what was asked is not for the asker (a cohort's model and aggregates go only
	// to its members and the coordinators).
	ErrForbidden error = wirecode.New(132, "forbidden")
	// ErrNotReady: the aggregate asked for is not ready yet (the slice is still taking uploads):
	// the aggregator answered, alive, within AggregateWait; ask it again.
	ErrNotReady error = wirecode.New(135, "not ready")
	// ErrTooLarge: the answer asked for would exceed a limit (a page larger than MaxPage, a reply
	// larger than MaxQueryReply): ask for less.
	ErrTooLarge error = wirecode.New(134, "too large")
	// ErrMalformed is wrapped by every decoding error of this package's messages.
	ErrMalformed error = wirecode.New(133, "protocol: malformed message")
)
