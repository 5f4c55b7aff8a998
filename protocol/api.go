package protocol

import (
	"fmt"
	"strings"
	"time"

	"github.com/cohortlab/cohort/consensus"
)

// Message types of the client API (transport.Header.Type).
const (
	// MsgSubmit carries a signed consensus.Envelope (msgpack) in the header body; the reply body is
	// a SubmitReply. A follower forwards it to the leader.
	MsgSubmit = "coord.submit"
	// MsgQuery asks for read-only state; the header body is a Query. The reply's payload is the
	// QueryReply (msgpack, transport.EncodePayload), at most MaxQueryReply bytes: what grows with
	// the members or rounds never travels in a frame header, and lists come a page at a time.
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
	QueryProposals = "proposals" // a page of the proposals, by ID
	QueryProposal  = "proposal"  // proposal ID
	QueryCohort    = "cohort"    // cohort ID
	QueryMembers   = "members"   // a page of the members, by member ID
	QueryMember    = "member"    // the member Query.Member
	// QueryLedger answers a page of the payouts (in the order they were made) of cohort ID, or of
	// every cohort for ID 0, with the balances of the contributors the page names, the pools of
	// its cohorts (cohort ID's always) and the treasury: a reply does not grow with the ledger.
	QueryLedger = "ledger"
	// QueryBalances answers a page of every contributor's balance, by contributor key; with
	// Query.Member set, the balances of that member's contributors instead (not paged).
	QueryBalances = "balances"
	QueryRounds   = "rounds" // a page of cohort ID's rounds, by number
	QueryRound    = "round"  // round Query.Number of cohort ID
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

// AggregateWait bounds how long an aggregator holds a long-poll for an aggregate before it answers
// ErrNotReady: well inside the asker's own limit, so that a live aggregator always answers and
// only a dead one times out (a timed-out call costs its connection: the next is a new handshake).
const AggregateWait = 1500 * time.Millisecond

// Paging of the list queries (proposals, members, rounds, the ledger's payouts, balances).
const (
	// DefaultPage is the page a list query answers when its Limit is 0.
	DefaultPage = 256
	// MaxPage is the largest Limit a list query may ask for.
	MaxPage = 4096
	// MaxQueryReply bounds the encoded QueryReply: a reply that would be larger (a page of
	// unusually large records) is refused with ErrTooLarge, naming the query; ask for a
	// smaller page.
	MaxQueryReply = 16 << 20
)

// Query asks for read-only state. Linearizable asks the leader to confirm its leadership with a
// barrier first (it then answers only on the leader); otherwise any node answers from its copy.
type Query struct {
	What string
	// The fields a query does not use are left out of its encoding (omitempty): a missing field
	// decodes as its zero value, as it did when every field was written.
	ID           uint64 `msgpack:",omitempty"`
	Linearizable bool   `msgpack:",omitempty"`
	After        uint32 `msgpack:",omitempty"` // QueryNextRound: the last round the asker has seen
	Number       uint32 `msgpack:",omitempty"` // QueryRound: the round
	Member       string `msgpack:",omitempty"` // QueryMember, QueryBalances: the member ID
	// Offset and Limit ask a list query for items [Offset, Offset+Limit) of the list; Limit 0
	// means DefaultPage, more than MaxPage is refused. QueryReply.Total is the list's length.
	Offset uint32 `msgpack:",omitempty"`
	Limit  uint32 `msgpack:",omitempty"`
	// Mine trims a proposal, a cohort and its rounds (QueryProposal, QueryCohort, QueryRound,
	// QueryNextRound) to what concerns the asker: its own vote, its own entry among the members,
	// participants, receipts, influence, flags and exclusions (MineProposal, MineCohort,
	// MineRound). What a peer receives per round then does not grow with the cohort.
	Mine bool `msgpack:",omitempty"`
}

// Page returns the range [lo, hi) of a list of n items that q asks for, or an error for a Limit
// beyond MaxPage. An Offset at or past n gives an empty page.
func (q Query) Page(n int) (lo, hi int, err error) {
	if q.Limit > MaxPage {
		return 0, 0, fmt.Errorf("%w: a page of %d %s, limit %d", ErrTooLarge, q.Limit, q.What, MaxPage)
	}
	limit := int(q.Limit)
	if limit == 0 {
		limit = DefaultPage
	}
	lo = min(int(q.Offset), n)
	return lo, min(lo+limit, n), nil
}

// QueryReply carries exactly one of its fields, per Query.What (and Total with a page).
type QueryReply struct {
	Status    *Status              `msgpack:",omitempty"`
	Proposals []consensus.Proposal `msgpack:",omitempty"`
	Cohort    *consensus.Cohort    `msgpack:",omitempty"`
	Members   []consensus.Member   `msgpack:",omitempty"`
	Member    *consensus.Member    `msgpack:",omitempty"`
	Ledger    *consensus.Ledger    `msgpack:",omitempty"`
	Rounds    []consensus.Round    `msgpack:",omitempty"`
	Balances  []consensus.Balance  `msgpack:",omitempty"`
	// Total is the length of the list a page was taken from (proposals, members, rounds, the
	// ledger's payouts, balances).
	Total uint32 `msgpack:",omitempty"`
}

// CheckQueryReply refuses an encoded reply to q of n bytes over MaxQueryReply (the server's
// side) with ErrTooLarge, naming the query.
func CheckQueryReply(q Query, n int) error {
	if n > MaxQueryReply {
		return fmt.Errorf("%w: the %s reply is %d bytes, limit %d: ask for a smaller page (Query.Limit)", ErrTooLarge, q.What, n, MaxQueryReply)
	}
	return nil
}

// MineCohort trims cohort c to what concerns member me: its own entry among the members, without
// the fingerprints of its data (it has them).
func MineCohort(c consensus.Cohort, me string) consensus.Cohort {
	c.Members = keep(c.Members, func(m consensus.CohortMember) bool { return m.Member == me })
	for i := range c.Members {
		cs := append([]consensus.ContributorData(nil), c.Members[i].Contributors...)
		for j := range cs {
			cs[j].Fingerprint = nil
		}
		c.Members[i].Contributors = cs
	}
	return c
}

// MineProposal trims proposal p to what concerns member me: its own vote among the votes.
func MineProposal(p consensus.Proposal, me string) consensus.Proposal {
	p.Votes = keep(p.Votes, func(v consensus.Vote) bool { return v.Member == me })
	return p
}

// MineRound trims round r to what concerns member me: the participants, receipts, influence,
// flags and exclusions that are its own. Whether me takes part is still read from Participants.
func MineRound(r consensus.Round, me string) consensus.Round {
	is := func(s string) bool { return s == me }
	r.Participants = keep(r.Participants, is)
	r.Excluded = keep(r.Excluded, is)
	r.Receipts = keep(r.Receipts, func(x consensus.Receipt) bool { return x.Member == me })
	mine := func(contributor string) bool {
		m, _, ok := consensus.SplitContributorKey(contributor)
		return ok && m == me
	}
	r.Influence = keep(r.Influence, func(x consensus.Influence) bool { return mine(x.Contributor) })
	r.Flags = keep(r.Flags, func(x consensus.Flag) bool { return mine(x.Contributor) })
	return r
}

func keep[T any](xs []T, ok func(T) bool) []T {
	var out []T
	for _, x := range xs {
		if ok(x) {
			out = append(out, x)
		}
	}
	return out
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
