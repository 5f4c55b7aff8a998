package protocol

import (
	"strings"
	"time"

	"github.com/cohortlab/cohort/consensus"
)

// Message types of the client API (transport.Header.Type).
const (
	// MsgSubmit carries a signed consensus.Envelope (msgpack) in the header body; the reply body is
	// a SubmitReply. A follower forwards it to the leader.
	MsgSubmit = "coord.submit"
	// MsgQuery asks for read-only state; the header body is a Query, the reply body a QueryReply.
	MsgQuery = "coord.query"
)

// SubmitReply answers MsgSubmit.
type SubmitReply struct {
	Result consensus.Result
	// Leader is the raft ID of the node that applied the command.
	Leader string
}

// Query kinds.
const (
	QueryStatus    = "status"
	QueryProposals = "proposals"
	QueryProposal  = "proposal"
	QueryCohort    = "cohort"
	QueryMembers   = "members"
	QueryLedger    = "ledger"
	QueryRounds    = "rounds"
	// QueryNextRound long-polls (up to NextRoundWait) until cohort ID has a round newer than
	// After, or is done; the reply holds the cohort and its latest round.
	QueryNextRound = "next-round"
	// QueryPing answers at once with an empty reply: a liveness check that reads no state.
	QueryPing = "ping"
)

// NextRoundWait bounds how long a QueryNextRound waits before answering with what there is.
// The asker gives the call NextRoundWait + 2 s before it tries another coordinator, so this is
// also about how long a peer long-polling a coordinator that died takes to learn of the next
// round (a round opened just before its leader died has a deadline that keeps running).
const NextRoundWait = 4 * time.Second

// Query asks for read-only state. Linearizable asks the leader to confirm its leadership with a
// barrier first (it then answers only on the leader); otherwise any node answers from its copy.
type Query struct {
	What         string
	ID           uint64
	Linearizable bool
	After        uint32 // QueryNextRound: the last round the asker has seen
}

// QueryReply carries exactly one of its fields, per Query.What.
type QueryReply struct {
	Status    *Status              `msgpack:",omitempty"`
	Proposals []consensus.Proposal `msgpack:",omitempty"`
	Cohort    *consensus.Cohort    `msgpack:",omitempty"`
	Members   []consensus.Member   `msgpack:",omitempty"`
	Ledger    *consensus.Ledger    `msgpack:",omitempty"`
	Rounds    []consensus.Round    `msgpack:",omitempty"`
}

// Status describes one coordinator node and the cluster as it sees it.
type Status struct {
	ID           string       `json:"id"`
	Addr         string       `json:"addr"`
	NodeKeyID    string       `json:"node_key_id"`
	Role         string       `json:"role"`
	Aggregator   bool         `json:"aggregator"` // the node is configured as an aggregator (a Raft non-voter)
	LeaderID     string       `json:"leader_id"`
	LeaderAddr   string       `json:"leader_addr"`
	Term         string       `json:"term"`
	LastIndex    string       `json:"last_log_index"`
	AppliedIndex uint64       `json:"applied_index"`
	StateHash    string       `json:"state_hash"`
	Servers      []ServerInfo `json:"servers"`
	Coordinators []string     `json:"coordinators"` // "NAME=KEYID", NAME a raft server ID

	Members   int           `json:"members"`
	Proposals int           `json:"proposals"`
	Cohorts   []CohortBrief `json:"cohorts"`
}

// ServerInfo is one raft server: a voter, or an aggregator (a non-voter: it holds a replica and
// aggregates slices, but does not vote and never leads).
type ServerInfo struct {
	ID       string             `json:"id"`
	Addr     string             `json:"addr"`
	Suffrage consensus.Suffrage `json:"suffrage"` // consensus.Voter or consensus.Nonvoter; empty from a node that does not report it
}

// Voter reports whether the server votes (an empty Suffrage, from a node that does not report
// it, is a voter: before aggregators every server was one).
func (sv ServerInfo) Voter() bool { return sv.Suffrage != consensus.Nonvoter }

// CohortBrief summarises a cohort in Status.
type CohortBrief struct {
	ID           uint64 `json:"id"`
	Proposal     uint64 `json:"proposal"`
	Members      int    `json:"members"`
	Status       string `json:"status"`
	CurrentRound uint32 `json:"current_round"`
}

// KeyAddrs maps the key ID of every registered coordinator that is a raft server — voter or
// aggregator — to its address (where its QUIC API and raft listen): how a peer finds the
// aggregator named by key in a round's slice, and a client the key to pin at each address.
func (st *Status) KeyAddrs() map[string]string {
	addrOf := make(map[string]string, len(st.Servers))
	for _, sv := range st.Servers {
		addrOf[sv.ID] = sv.Addr
	}
	out := make(map[string]string, len(st.Coordinators))
	for _, co := range st.Coordinators {
		name, key, ok := strings.Cut(co, "=")
		if a, known := addrOf[name]; ok && known {
			out[key] = a
		}
	}
	return out
}
