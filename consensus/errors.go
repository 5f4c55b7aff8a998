package consensus

import (
	"fmt"

	"github.com/cohortlab/cohort/internal/wirecode"
)

// Sentinel errors. Every error returned by State.Apply and Node.Apply wraps one of these (test with
// errors.Is); the wrapping message names the offending field or ID. Each carries a wire code
// (internal/wirecode, 64–127): a coordinator's reply keeps it, so a client matches a remote
// rejection with errors.Is too.
var (
	// ErrDecode: the command bytes (envelope, body or log entry) could not be decoded.
	ErrDecode error = wirecode.New(64, "consensus: malformed command")
	// ErrVersion: the envelope or snapshot carries a version this code does not know.
	ErrVersion error = wirecode.New(65, "consensus: unsupported version")
	// ErrInvalid: a command field is out of range, empty where required, unsorted or too long.
	ErrInvalid error = wirecode.New(66, "consensus: invalid command")
	// ErrUnsigned: the envelope carries no signature.
	ErrUnsigned error = wirecode.New(67, "consensus: unsigned command")
	// ErrBadSignature: the signature does not verify against the issuer's registered key.
	ErrBadSignature error = wirecode.New(68, "consensus: bad signature")
	// ErrUnknownIssuer: the issuer is neither a registered member nor a coordinator.
	ErrUnknownIssuer error = wirecode.New(69, "consensus: unknown issuer")
	// ErrForbidden: the issuer is known but may not issue this command (member vs coordinator).
	ErrForbidden error = wirecode.New(70, "consensus: issuer not allowed to issue this command")
	// ErrStaleRequest: the request ID is older than the dedupe window for its issuer, so the FSM
	// cannot tell whether it was applied; the client must use a fresh request ID.
	ErrStaleRequest error = wirecode.New(71, "consensus: request ID older than the dedupe window")
	// ErrExists: the object (member, key, contributor name, vote, join, receipt, round) already exists.
	ErrExists error = wirecode.New(72, "consensus: already exists")
	// ErrNotFound: a referenced member, proposal, cohort, round or contributor does not exist.
	ErrNotFound error = wirecode.New(73, "consensus: not found")
	// ErrWrongStatus: the object is not in a status that allows the command (closed proposal,
	// round not open, cohort finished, ...).
	ErrWrongStatus error = wirecode.New(74, "consensus: wrong status")
	// ErrDeadline: the command arrived after (vote, receipt) or before (tally) a deadline.
	ErrDeadline error = wirecode.New(75, "consensus: deadline")
	// ErrLimit: the command would go past one of the cluster's limits (Limits) or a protocol
	// bound; the message names the limit and the value.
	ErrLimit error = wirecode.New(76, "consensus: over a limit")
	// ErrOverflow: integer amounts or weights would overflow 64 bits.
	ErrOverflow error = wirecode.New(77, "consensus: integer overflow")
	// ErrSnapshot: a snapshot is truncated, corrupt or fails its checksum.
	ErrSnapshot error = wirecode.New(78, "consensus: bad snapshot")

	// ErrNotLeader: Node.Apply was called on a node that is not the leader. The returned error is a
	// *NotLeaderError carrying the leader's address when one is known.
	ErrNotLeader error = wirecode.New(79, "consensus: not the leader")
	// ErrShutdown: the node is shut down.
	ErrShutdown error = wirecode.New(80, "consensus: node is shut down")
	// ErrConfig: a Config field is invalid.
	ErrConfig error = wirecode.New(81, "consensus: invalid config")
)

// NotLeaderError is returned by Node.Apply on a follower. It matches ErrNotLeader with errors.Is.
type NotLeaderError struct {
	// LeaderID and LeaderAddr name the current leader; both are empty when no leader is known.
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "consensus: not the leader (no leader known)"
	}
	return fmt.Sprintf("consensus: not the leader (leader %s at %s)", e.LeaderID, e.LeaderAddr)
}

// WireCode is ErrNotLeader's code.
func (e *NotLeaderError) WireCode() uint16 { return wirecode.Of(ErrNotLeader) }

// Is reports whether target is ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
