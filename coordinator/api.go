package coordinator

// Message types only coordinators exchange (transport.Header.Type). The client API's messages
// are in package protocol.
const (
	// MsgJoinCluster is sent by a coordinator node to the leader to have its key registered; the
	// header body is a self-signed AddCoordinator envelope.
	MsgJoinCluster = "coord.join-cluster"
	// MsgScore is sent by the leader to an aggregator for the validation sums of one slice of a
	// round (ScoreRequest, the header body); the reply's payload is an attribution.Partial in its
	// binary layout (Partial.AppendBinary, at most attribution.MaxPartialBytes), its header has
	// no body. Coordinators only.
	MsgScore = "coord.score"
)

// ScoreRequest asks an aggregator for the validation sums of slice Slice of a round.
type ScoreRequest struct {
	Cohort uint64
	Round  uint32
	Slice  int
}
